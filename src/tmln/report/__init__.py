"""Outputs for people and for QuPath: GeoJSON per slide, overlay thumbnails, the HTML report."""
