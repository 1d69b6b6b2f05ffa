"""``tmln phantom OUT_DIR``: write a cohort of phantom slides with exact ground truth."""

from __future__ import annotations

import click


@click.command("phantom")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--patients", type=click.IntRange(min=1), default=2, show_default=True, help="Number of patients.")
@click.option("--slides-per-patient", type=click.IntRange(min=1), default=1, show_default=True,
              help="Slides per patient (each shows distinct nodes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same seed, same bytes.")
@click.option("--size-mm", type=(click.FloatRange(min=0.5), click.FloatRange(min=0.5)), default=(8.0, 6.0),
              show_default=True, metavar="W H", help="Slide width and height in mm.")
@click.option("--mpp", type=click.Choice(["0.25", "0.5", "2.0"]), default="0.5", show_default=True,
              help="Level-0 µm/px of the slides written (0.25 ~ 40x, 0.5 ~ 20x, 2.0 ~ 5x: enough for node models).")
@click.option("--format", "fmt", type=click.Choice(["tiff", "svs"]), default="tiff", show_default=True,
              help="Generic tiled TIFF or Aperio-SVS-style file.")
@click.option("--no-mpp", is_flag=True, help="Write no µm/px metadata (to exercise the missing-mpp paths).")
@click.option("--negative-fraction", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Fraction of slides without any tumour.")
@click.option("--stain", type=click.Choice(["normal", "pale", "dark", "none"]), default="normal", show_default=True,
              help="Stain variation: random per slide (normal), all pale, all dark, or the reference stain.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Slides written in parallel, by this many processes (output identical to --workers 1).")
@click.option("--perinodal", is_flag=True,
              help="Add non-node tissue: septa, vessels and connective-tissue islands in the fat, a hilum, fatty "
                   "replacement inside nodes, a carcinoma or muscle fragment (truth unchanged).")
@click.option("--non-node-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Fraction of slides that are sections without any lymph node (carcinoma, muscle, fibro-fatty "
                   "tissue, gastric wall).")
@click.option("--textures", type=click.Path(exists=True, file_okay=False), default=None,
              help="Patch folder (tumor/ and normal/, e.g. PCam) whose real H&E patches texture the slides "
                   "in place of the procedural textures.")
@click.option("--textures-mpp", type=click.FloatRange(min=0.05, max=20), default=0.97, show_default=True,
              help="µm/px of the --textures patches.")
@click.option("--pen-marks", is_flag=True, help="Draw ink strokes (blue, green, black, red) on every slide.")
@click.option("--edge-nodes", type=click.IntRange(0, 10), default=0, show_default=True,
              help="Nodes per node slide cut by the slide's edge (30-70 %% on the slide; partial nodes, counted in "
                   "the truth like any node).")
def command(out_dir, patients, slides_per_patient, seed, size_mm, mpp, fmt, no_mpp, negative_fraction, stain, workers,
            perinodal, non_node_fraction, textures, textures_mpp, pen_marks, edge_nodes):
    """Write phantom lymph-node slides, slides.csv, GeoJSON truth and truth tables into OUT_DIR.

    \b
    Example:
      tmln phantom phantoms/ --patients 3 --slides-per-patient 2 --seed 7
      tmln phantom svs/ --patients 1 --format svs --mpp 0.25 --size-mm 4 3
      tmln phantom real/ --patients 8 --mpp 2.0 --perinodal --non-node-fraction 0.25 --textures pcam/train
    Writes <slide>.tiff|.svs, <slide>.nodes.geojson, <slide>.tumour.geojson (QuPath, level-0 px),
    slides.csv (slide_path, patient_id), truth_nodes.csv and truth_patients.csv.
    """
    from tmln.phantom import make_cohort

    csv = make_cohort(out_dir, patients=patients, slides_per_patient=slides_per_patient, seed=seed,
                      size_mm=tuple(size_mm), mpp=float(mpp), fmt=fmt, write_mpp=not no_mpp,
                      negative_fraction=negative_fraction, stain=stain, workers=workers, perinodal=perinodal,
                      non_node_fraction=non_node_fraction, textures=textures, textures_mpp=textures_mpp,
                      pen_marks=pen_marks, edge_nodes=edge_nodes)
    click.echo(str(csv))
