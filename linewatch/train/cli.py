"""`inspect-train`: fit a detector on good images and write a model bundle.

Its options are generated from the detector registry (common options plus every detector's own), so a
new detector brings its options with it; `--help` says which detectors take each one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.config import Option
from linewatch.models.registry import DETECTOR_KINDS
from linewatch.train.loop import TrainingInterrupted
from linewatch.train.options import all_options, explicit_keys, options_for, resolve_training

INTERRUPTED = 130  # the shell's convention for a process ended by Ctrl-C (128 + SIGINT)


def _help(key: str, option: Option, kinds: tuple[str, ...]) -> str:
    """The option's text, then its default per detector and which detectors take it."""
    defaults = {kind: options_for(kind)[key].default for kind in kinds}
    shown = {kind: value for kind, value in defaults.items() if value is not None}
    if len(set(map(str, shown.values()))) == 1 and len(shown) == len(kinds):
        default = f" Default: {next(iter(shown.values()))}."
    else:
        default = "".join(f" {kind}: {value}." for kind, value in shown.items())
        default = f" Defaults:{default}" if default else ""
    takers = f" [{', '.join(kinds)}]" if len(kinds) < len(DETECTOR_KINDS) else ""
    return f"{option.help}{default}{takers}".strip()


def _click_option(key: str, option: Option, kinds: tuple[str, ...]) -> Callable[[Any], Any]:
    flag = "--" + key.replace("_", "-")
    if option.type is bool:
        return click.option(f"{flag}/--no-{key.replace('_', '-')}", key, default=None, help=_help(key, option, kinds))
    kind: Any = {int: int, float: float, Path: click.Path(path_type=Path)}.get(option.type, str)
    if option.choices and option.type is str:
        kind = click.Choice(option.choices)
    return click.option(flag, key, type=kind, default=None, help=_help(key, option, kinds))


def _with_registry_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for key, (option, kinds) in reversed(list(all_options().items())):
        func = _click_option(key, option, kinds)(func)
    return func


@click.command()
@_with_registry_options
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML file with any of these options.")
@click.option("--tune", is_flag=True,
              help="Search backbone, input size, layers and the detector's main options on val-clean first "
                   "(options you set are held fixed), then train the best [patchcore, padim].")
@click.option("--budget", type=click.FloatRange(min=0.5), default=None,
              help="With --tune: minutes for search and final training together (default 10).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@friendly_errors
def main(config_file: Path | None, tune: bool, budget: float | None, quiet: bool, verbose: bool, **cli: Any) -> None:
    """Fit a detector on the good images of a category and write a model bundle."""
    from linewatch.train.pipeline import train

    setup_logging(verbose)
    for key, value in cli.items():
        if isinstance(value, str) and all_options()[key][0].type is tuple:
            cli[key] = tuple(part.strip() for part in value.split(",") if part.strip())
    options = resolve_training(config_file, cli)
    if budget is not None and not tune:
        raise click.UsageError("--budget applies to --tune only")
    try:
        tuning = None
        if tune:
            from linewatch.train.tune import DEFAULT_BUDGET_MIN, run_search, table_lines

            searched = run_search(options, explicit_keys(config_file, cli), budget or DEFAULT_BUDGET_MIN,
                                  not quiet)
            click.echo(f"tuning on val-clean ({searched.section['metric']}), {searched.seconds:.0f} s:")
            click.echo("\n".join("  " + line for line in table_lines(searched.rows)))
            options, tuning = searched.options, searched.section
        result = train(options, progress=not quiet, tuning=tuning)
    except TrainingInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted before training started; nothing was written to keep", err=True)
        sys.exit(INTERRUPTED)
    calibration = result.manifest["calibration"]
    training = result.manifest["training"]
    network = result.manifest["network"]
    size_mb = sum(f["bytes"] for f in result.manifest["files"].values()) / 1e6
    height, width = network["input"]["size"]
    click.echo(
        f"bundle: {result.bundle}\n"
        f"  model {options['model']} on {training['train_images']} good images of {training['category']!r}, "
        f"network {network['architecture']}, input {height}x{width}x{network['input']['channels']}\n"
        f"  threshold {calibration['threshold']:.5g} ({calibration['method']} on {calibration['val_images']} "
        f"validation images)\n"
        f"  trained in {result.seconds:.1f} s (fit {training['fit_seconds']:.1f} s), "
        f"peak memory {result.peak_rss_mb:.0f} MiB, bundle {size_mb:.1f} MB"
    )
    masks = result.manifest.get("masks")
    if masks:
        classifier = masks["classifier"]
        kinds = (f"defect types {', '.join(classifier['types'])} ({len(classifier['labels'])} reference masks)"
                 if classifier else "no labelled defect masks: no defect-type classifier")
        click.echo(f"  pixel threshold {masks['pixel_threshold']:.5g} ({masks['method']}); {kinds}")
    blur = result.manifest["postprocess"].get("blur")
    if blur:
        tried = ", ".join(f"{s} {pro:.4f}" for s, pro in blur["pro"].items()) or blur.get("reason", "")
        click.echo(f"  map blur sigma {result.manifest['postprocess']['blur_sigma']:g} ({blur['method']}: {tried})")
        if "pro_by_neighbours" in blur:
            best = ", ".join(f"{k} {max(row.values()):.4f}" for k, row in blur["pro_by_neighbours"].items())
            click.echo(f"  map neighbours {blur['neighbours']} (val-clean PRO at each count's best sigma: {best})")
