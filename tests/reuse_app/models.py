"""Models analysis_lib has never seen: neighbourhoods, trees and parcels, in two SRIDs."""

from django.contrib.gis.db import models


class Neighborhood(models.Model):
    """A neighbourhood, stored in Massachusetts State Plane metres (EPSG:26986)."""

    name = models.CharField(max_length=40, unique=True)
    boundary = models.MultiPolygonField(srid=26986, spatial_index=True)


class Tree(models.Model):
    """A street tree, a point in WGS 84."""

    class Species(models.TextChoices):
        OAK = "oak"
        MAPLE = "maple"
        ELM = "elm"

    location = models.PointField(srid=4326, spatial_index=True)
    species = models.CharField(max_length=10, choices=Species.choices)
    planted = models.IntegerField(null=True, blank=True)
    height_m = models.FloatField(null=True, blank=True)


class Parcel(models.Model):
    """A land parcel in EPSG:26986, some straddling neighbourhood borders."""

    shape = models.PolygonField(srid=26986, spatial_index=True)
    land_use = models.CharField(max_length=20)
    value = models.FloatField()
    # a second geometry field, so that analyses must name the one they use
    centre = models.PointField(srid=26986, null=True, blank=True, spatial_index=False)
