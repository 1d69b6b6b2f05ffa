"""Phantom whole-slide images of lymph nodes with exact ground truth.

``make_cohort`` writes slides, GeoJSON truth and truth tables; ``make_slide`` writes one slide.
See docs/phantoms.md.
"""

from tmln.phantom.cohort import PhantomSlide, cohort_specs, make_cohort, make_slide
from tmln.phantom.geometry import SlideLayout, SlideSpec, StainSpec, make_layout

__all__ = ["make_cohort", "make_slide", "make_layout", "cohort_specs", "PhantomSlide", "SlideLayout", "SlideSpec", "StainSpec"]
