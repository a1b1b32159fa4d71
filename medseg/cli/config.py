"""`medseg config show`: print the resolved, validated config."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.syntax import Syntax

from medseg.cli.options import ConfigOpt, SetOpt, help_markup
from medseg.config import config_to_yaml, load_config

app = typer.Typer(help="Inspect experiment configs.", no_args_is_help=True, rich_markup_mode=help_markup())


@app.command("show")
def show(config: str | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Print the resolved config (file + overrides + defaults) as YAML."""
    cfg = load_config(config, set_)
    Console().print(Syntax(config_to_yaml(cfg), "yaml", theme="ansi_dark"))
