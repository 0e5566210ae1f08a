"""The two tables of the analysis: ZIP code areas and building footprints."""

from django.contrib.gis.db import models


class ZipCode(models.Model):
    """A ZIP code area (a ZCTA or a synthetic Voronoi cell), in WGS 84."""

    code = models.CharField(max_length=5, unique=True)
    state = models.CharField(max_length=2, db_index=True)
    city = models.CharField(max_length=100, blank=True, default="")
    county = models.CharField(max_length=100, blank=True, default="")
    boundary = models.MultiPolygonField(srid=4326, spatial_index=True)

    class Meta:
        ordering = ["code"]
        verbose_name = "ZIP code"

    def __str__(self) -> str:
        return f"{self.code} {self.city}, {self.state}".strip()


class Building(models.Model):
    """One building footprint, in WGS 84."""

    class UseType(models.TextChoices):
        RESIDENTIAL = "residential"
        COMMERCIAL = "commercial"
        INDUSTRIAL = "industrial"
        INSTITUTIONAL = "institutional"
        OTHER = "other"

    boundary = models.PolygonField(srid=4326, spatial_index=True)
    footprint_m2 = models.FloatField(help_text="Footprint area in square metres.")
    height_m = models.FloatField(null=True, blank=True, help_text="Height in metres.")
    year_built = models.IntegerField(null=True, blank=True)
    use_type = models.CharField(max_length=16, choices=UseType.choices, default=UseType.OTHER)
    source_id = models.CharField(
        max_length=64, blank=True, default="", help_text="Identifier in the source data."
    )
    zip = models.ForeignKey(
        ZipCode,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="buildings",
        help_text="The ZIP code the source assigns (the generator: the one holding the centroid).",
    )

    class Meta:
        verbose_name = "building"

    def __str__(self) -> str:
        return f"Building {self.pk} ({self.use_type}, {self.footprint_m2:.0f} m²)"
