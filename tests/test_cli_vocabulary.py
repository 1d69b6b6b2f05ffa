"""One vocabulary of options: walk every command and check help text, shown defaults and that a name
has one meaning across commands (``tmln.cli.options.VOCABULARY``); deprecated aliases warn and work."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tmln.cli import main
from tmln.cli.options import DEPRECATED_ALIASES, VOCABULARY, Command, deprecated_alias

UNSET = getattr(click.core, "UNSET", None)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def commands():
    """(command path, click command) of every leaf command, sub-groups included."""
    ctx = click.Context(main)

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(main, []))


def options(cmd):
    return [p for p in cmd.params if isinstance(p, click.Option)]


def _is_alias(path, opt) -> bool:
    return any(path == c and old in opt.opts for c, old, _ in DEPRECATED_ALIASES)


def test_walk_finds_every_command():
    paths = {p for p, _ in commands()}
    assert {"analyze", "survival", "train tumour", "train nodes", "predict-patches", "tumour-map", "phantom",
            "evaluate staging", "info"} <= paths


def test_every_option_has_help_and_shows_its_default():
    problems = []
    for path, cmd in commands():
        for opt in options(cmd):
            name = "/".join(opt.opts)
            if not (opt.help or "").strip():
                problems.append(f"{path} {name}: no help text")
            if opt.hidden and not _is_alias(path, opt):
                problems.append(f"{path} {name}: hidden but not a registered deprecated alias")
            default = opt.default
            no_default = default is None or default is UNSET or default in ("", (), False) or opt.is_flag
            if not no_default and not opt.show_default and "default" not in (opt.help or "").lower():
                problems.append(f"{path} {name}: default {default!r} not shown (show_default=True)")
    assert not problems, "\n".join(problems)


def test_one_name_one_meaning():
    uses = defaultdict(list)
    for path, cmd in commands():
        for opt in options(cmd):
            if opt.hidden:
                continue
            for name in opt.opts + opt.secondary_opts:
                uses[name].append((path, opt.help or ""))
    problems = []
    for name, where in sorted(uses.items()):
        if len(where) > 1 and name not in VOCABULARY:
            problems.append(f"{name} is used by {[p for p, _ in where]} but has no entry (one meaning) in VOCABULARY")
        if name in VOCABULARY:
            pattern = VOCABULARY[name][1]
            for path, text in where:
                if not re.search(pattern, text, flags=re.IGNORECASE):
                    problems.append(f"{path} {name}: help {text[:70]!r} does not carry its one meaning "
                                    f"({VOCABULARY[name][0]}; pattern {pattern!r})")
    assert not problems, "\n".join(problems)


def test_the_vocabulary_check_can_fail():
    # a --mpp that means the model's resolution (the old `train tumour --mpp`) would not pass
    assert not re.search(VOCABULARY["--mpp"][1], "The model's input resolution, µm/px.", flags=re.IGNORECASE)
    assert not re.search(VOCABULARY["--workers"][1], "DataLoader worker processes.", flags=re.IGNORECASE)
    assert re.search(VOCABULARY["--loader-workers"][1], "DataLoader worker processes.", flags=re.IGNORECASE)


def test_registered_aliases_exist_hidden_and_name_their_replacement():
    by_path = dict(commands())
    for path, old, new in DEPRECATED_ALIASES:
        opts = options(by_path[path])
        alias = [o for o in opts if old in o.opts]
        assert len(alias) == 1 and alias[0].hidden and new in alias[0].help, (path, old)
        assert any(new in o.opts and not o.hidden for o in opts), (path, new)


def test_docs_list_every_name_and_alias():
    text = DOCS.read_text(encoding="utf-8")
    for name in VOCABULARY:
        assert f"`{name}" in text, name
    for path, old, new in DEPRECATED_ALIASES:
        assert re.search(rf"{re.escape(path)}.*`{re.escape(old)}`.*`{re.escape(new)}`", text), (path, old)


@click.command(cls=Command)
@click.option("--new", "value", type=float, default=1.0, show_default=True, help="The value.")
@deprecated_alias("--old", "--new", "value", float, "the value")
def _demo(value):
    click.echo(f"value={value}")


def test_deprecated_alias_warns_and_sets_the_new_option():
    r = CliRunner().invoke(_demo, ["--old", "3"])
    assert r.exit_code == 0 and "value=3.0" in r.output
    assert "warning: --old is deprecated" in r.output and "use --new (the value)" in r.output
    r = CliRunner().invoke(_demo, [])
    assert r.output.strip() == "value=1.0"
    r = CliRunner().invoke(_demo, ["--new", "2", "--old", "3"])
    assert r.exit_code == 2 and "give only --new" in r.output
    assert "--old" not in CliRunner().invoke(_demo, ["--help"]).output


@pytest.mark.parametrize("args,new", [
    (["train", "tumour", "--mpp", "0.25"], "--model-mpp"),
    (["train", "nodes", "--workers", "2", "--mpp", "4"], "--model-mpp"),
    (["train", "tumour", "--workers", "1"], "--loader-workers"),
])
def test_real_commands_accept_the_old_spelling_with_a_warning(args, new, tmp_path):
    # without a training source the command stops at its own usage check, after parsing the alias
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "m")])
    assert "is deprecated" in r.output and new in r.output
    assert r.exit_code == 2


def test_help_shows_the_new_names_only():
    out = CliRunner().invoke(main, ["train", "tumour", "--help"]).output
    assert "--model-mpp" in out and "--loader-workers" in out
    assert not re.search(r"--mpp\b", out.replace("--patches-mpp", "").replace("--model-mpp", ""))
