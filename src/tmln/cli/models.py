"""``tmln models``: list the bundled models with their cards."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the full card(s) as JSON.")
def command(name, as_json):
    """List bundled models (usable by name wherever a model directory is accepted), or show one card.

    \b
    Examples:
      tmln models
      tmln models demo-tumour --json
      tmln models path/to/my_model_dir
    """
    from tmln.models.card import list_bundled, read_card

    names = [name] if name else list_bundled()
    if not names:
        click.echo("no bundled models")
        return
    cards = {n: read_card(n).to_dict() for n in names}
    if as_json:
        click.echo(json.dumps(cards if not name else cards[name], indent=2))
        return
    for n, c in cards.items():
        click.echo(
            f"{n}\t{c['task']}\t{c['architecture']}\t{c['mpp']} µm/px\tpatch {c['patch_size']} px\t"
            f"classes {','.join(c['classes'])}\tthreshold {c['threshold']}\n    {c['intended_use']}"
        )
