"""``tmln view``: review a run (or one slide) in the browser.

A local, read-only web app: the slides per patient with N stage and T/MLN, a deep-zoom view of each
slide (tiles through ``tmln.slide.Slide``, OpenSeadragon shipped in ``static/``), node outlines by
category, tumour regions and labels from the run's GeoJSON, the tumour probability map as a heat
layer, the node table and a review list of the least certain calls (``tmln.view.review``).

Python: ``serve(run_dir, host, port)`` runs it; ``make_app(run_dir)`` gives the bound server (tests,
notebooks); ``RunData.for_slide(slide, annotations=..., tumour_map=...)`` views a single slide.
"""

from tmln.view.data import RunData
from tmln.view.server import make_app, serve

__all__ = ["RunData", "make_app", "serve"]
