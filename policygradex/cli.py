"""Command line: a thin typer app over the library. Config options are generated from config.py.

Every setting of ``Config`` becomes an option ``--SECTION-FIELD`` (``--meta-steps-per-task``,
``--estimate-proj-dim``; top-level ones plain: ``--seed``), with the field's docstring as help. Errors a
user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import shutil
import sys
import textwrap
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypedDict

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from policygradex.config import Config, field_docs, literal_choices, with_overrides
from policygradex.errors import ConfigError, PGXError

if TYPE_CHECKING:
    # Typer (0.26 on) runs on a vendored copy of click, not the click package: these are the types its TyperGroup
    # and TyperCommand pass to the methods overridden below (a private module, so for annotations only).
    from typer._click import Context, HelpFormatter

    from policygradex.experiments.pipeline import RunResult
    from policygradex.experiments.results import CompareResults


class _Group(TyperGroup):
    """Lists each command with its whole first paragraph, wrapped (click cuts it to one line)."""

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                text = cmd.short_help or (cmd.help or "").split("\n\n")[0]
                rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# Help is plain click text, not rich's option tables: those cut long flag names (--meta-steps-per-ta…) to fit
# narrow terminals, while click wraps the help beside them and never shortens a name.
class _PlainHelp(TypedDict):
    rich_markup_mode: None
    context_settings: dict[str, Any]
    cls: type[TyperGroup]


PLAIN: _PlainHelp = {"rich_markup_mode": None, "context_settings": {"max_content_width": 100}, "cls": _Group}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, **PLAIN,
                  help="Which RL tasks to train together: PolicyGradEx task grouping from projected gradients.")


@dataclasses.dataclass
class Option:
    param: str  # python parameter name
    section: str | None  # None for top-level fields of Config
    field: str
    flag: str
    kind: type  # the type typer parses (tuples travel as comma-separated strings)
    tuple_of: type | None
    default: Any  # Config()'s, as text (--help shows the --family's own: ConfigCommand)
    help: str
    choices: tuple[str, ...] = ()  # a Literal field's values (parsed as str; the config checks the value)


def config_options() -> list[Option]:
    options = []
    for top in dataclasses.fields(Config):
        default = getattr(Config(), top.name)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):  # a section (an instance)
            cls, section = type(default), top.name
            fields = [(f, getattr(default, f.name)) for f in dataclasses.fields(cls)]
        else:
            cls, section, fields = Config, None, [(top, default)]
        hints, docs, choices = typing.get_type_hints(cls), field_docs(cls), literal_choices(cls)
        for f, value in fields:
            flag = f.metadata.get("flag") or (f"{section}-{f.name}" if section else f.name)
            kind, tuple_of = _parse_type(hints[f.name])
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            options.append(Option(flag.replace("-", "_"), section, f.name, "--" + flag.replace("_", "-"), kind,
                                  tuple_of, shown, docs.get(f.name, ""), choices.get(f.name, ())))
    return options


@functools.cache
def _options_by_param() -> dict[str, Option]:
    return {o.param: o for o in config_options()}


def flag_for(field: str) -> str:
    """The option of a dotted config field (``meta.gamma`` -> ``--meta-gamma``, ``cluster.k`` -> ``--k``,
    ``seed`` -> ``--seed``); the dotted name itself when no option sets it."""
    for o in _options_by_param().values():
        if (f"{o.section}.{o.field}" if o.section else o.field) == field:
            return o.flag
    return field


def error_message(exc: PGXError) -> str:
    """What the CLI prints after ``error:``; a ConfigError names the flag that sets the field."""
    return f"{flag_for(exc.field)} {exc.reason}" if isinstance(exc, ConfigError) else str(exc)


def _parse_type(hint: Any) -> tuple[type, type | None]:
    """(the type typer parses, the element type of a tuple). A ``Literal[...]`` is parsed as text and checked by
    the config, whose error names the choices (typer's own check would print a multi-line usage error)."""
    if typing.get_origin(hint) is typing.Literal:
        return str, None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:  # a tuple of Literal values: text, checked by the config likewise
        return str, str if typing.get_origin(args[0]) is typing.Literal else args[0]
    if args and typing.get_origin(hint) is not None:  # X | None
        return args[0], None
    return hint, None


def build_config(values: dict[str, Any], family: str, quick: bool) -> Config:
    """The family's budgets (quick or full), then every option the user gave."""
    overrides: dict[str, Any] = {}
    for opt in config_options():
        value = values.get(opt.param)
        if value is None:
            continue
        if opt.tuple_of is not None:
            try:
                value = tuple(opt.tuple_of(v) for v in str(value).split(",") if v.strip())
            except ValueError:
                raise PGXError(f"{opt.flag} takes comma-separated values, for example 64,64; got {value!r}") from None
        if opt.section is None:
            overrides[opt.field] = value
        else:
            overrides.setdefault(opt.section, {})[opt.field] = value
    return with_overrides(Config.for_family(family, quick), overrides)


SECTION_TITLES: dict[str | None, str] = {None: "General"}
"""Help section of each config section (default: its name capitalised)."""


def _section_doc(section: str | None) -> str:
    """One sentence saying what a config section sets, from its docstrings."""
    if section is None:
        return "The seed, and where work runs (which never changes results)."
    doc = field_docs(Config).get(section) or inspect.getdoc(type(getattr(Config(), section))) or ""
    first = " ".join(doc.split()).replace("``", "").split(". ")[0]
    return first if first.endswith(".") else first + "."


def _shown(value: Any) -> str | None:
    """A default as help shows it; None when there is none to show (its help says what happens)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _help_family(args: Sequence[str], default: str) -> tuple[str, bool]:
    """(family, quick) named on a command line, for the defaults its help shows; the last --family wins,
    as in the real parse, and an unknown name falls back to ``default`` (the real parse reports it)."""
    from policygradex.tasks import family_info

    family, quick = default, False
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--family" and i + 1 < len(args):
            family = args[i + 1]
        elif arg.startswith("--family="):
            family = arg.partition("=")[2]
        elif arg == "--quick":
            quick = True
    try:
        family_info(family)
    except PGXError:
        family = default
    return family, quick


class ConfigCommand(TyperCommand):
    """A command with config options: its help groups them by section and shows the defaults of the family
    the command line names (``run --family planted --help``), since help is printed before options are parsed."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        default = next((p.default for p in self.params if p.name == "family"), None)
        family = default if isinstance(default, str) else "cartpole"
        ctx.meta["policygradex.help_family"] = _help_family(args, family)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        options = _options_by_param()
        family, quick = ctx.meta.get("policygradex.help_family", ("cartpole", False))
        cfg = Config.for_family(family, quick)
        own: list[tuple[str, str]] = []
        sections: dict[str | None, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            opt = options.get(param.name or "")
            if opt is None:
                own.append(record)
                continue
            value = getattr(cfg if opt.section is None else getattr(cfg, opt.section), opt.field)
            shown = _shown(value)
            name, text = record
            sections.setdefault(opt.section, []).append((name, f"{text}  [default: {shown}]" if shown else text))
        if own:
            with formatter.section("Options"):
                formatter.write_dl(own)
        if sections:
            formatter.write_paragraph()
            formatter.write_text(f"Defaults shown: the {family} family's{' quick preset' if quick else ''} "
                                 "(--family NAME --help shows another family's; --quick, the quick preset).")
        for section, rows in sections.items():
            title = SECTION_TITLES.get(section) or str(section).capitalize()
            with formatter.section(f"{title} options"):
                formatter.write_text(_section_doc(section))
                formatter.write_paragraph()
                formatter.write_dl(rows)


def with_config_options(fn=None, *, validate: bool = False):
    """Give ``fn`` one keyword option per config field, on top of its own parameters; the ``validate``
    section's only with ``validate=True`` (``policygradex validate``). Register ``fn`` with
    ``cls=ConfigCommand`` for grouped help with the family's defaults."""
    if fn is None:
        return functools.partial(with_config_options, validate=validate)
    own = list(inspect.signature(fn).parameters.values())
    own = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [
        inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[o.kind],  # noqa: UP045
                          default=typer.Option(None, o.flag if o.kind is not bool else f"{o.flag}/--no-{o.flag[2:]}",
                                               help=o.help, show_default=False, metavar=_metavar(o)))
        for o in config_options() if validate or o.section != "validate"
    ]
    fn.__signature__ = inspect.Signature(own + extra)
    return fn


def _metavar(o: Option) -> str | None:
    if o.choices:
        return "[" + "|".join(o.choices) + "]"
    if o.tuple_of is not None:
        return {int: "INT", float: "FLOAT"}.get(o.tuple_of, "NAME") + "[,...]"
    return None


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


OUT = typer.Option(..., "--out", help="Run folder; an existing one with the same settings resumes.")
FAMILY = typer.Option("cartpole", "--family", help="Task family (see `policygradex tasks`).")
N_TASKS = typer.Option(None, "--n-tasks", help="Number of tasks; default: the family's own.")
QUICK = typer.Option(False, "--quick", help="Tiny budgets for a smoke run (seconds).")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")


def _guarded(action):
    """Run ``action()``; errors a user can fix become one line and exit code 2."""
    try:
        return action()
    except PGXError as exc:
        raise _fail(error_message(exc)) from None
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted; run the same command again to resume")
        raise typer.Exit(130) from None


def _family_and_config(family: str, n_tasks: int | None, quick: bool, values: dict[str, Any]):
    from policygradex.tasks import make_family

    cfg = build_config(values, family, quick)
    return make_family(family, n_tasks=n_tasks, seed=cfg.seed), cfg


@app.command("run", cls=ConfigCommand)
@with_config_options
def run_cmd(out: Path = OUT, family: str = FAMILY, n_tasks: Optional[int] = N_TASKS,  # noqa: UP045
            quick: bool = QUICK, progress: bool = PROGRESS, **values: Any) -> None:
    """Run the whole pipeline: meta-train, estimate affinity, group, train groups and baselines, report."""
    from policygradex.experiments.pipeline import Pipeline

    def action():
        fam, cfg = _family_and_config(family, n_tasks, quick, values)
        return Pipeline(fam, cfg, out, progress).run()

    result: RunResult = _guarded(action)
    console = Console()
    grouping = result.metrics.grouping
    stability = "" if grouping.stability is None else f" (bootstrap stability {grouping.stability:.2f})"
    console.print(f"groups: {grouping.reason}{stability}", highlight=False)
    for name, res in result.metrics.groupings.items():
        success = "" if res.success_rate is None else f"  success {100 * res.success_rate:.1f}%"
        console.print(f"{name:>14}: k={res.k:<2} mean return {res.mean:.1f}{success}")
    if (score := result.metrics.grouping.nmi_true) is not None:
        console.print(f"NMI against the family's true grouping: {score:.3f}")


@app.command("compare", cls=ConfigCommand)
@with_config_options
def compare_cmd(out: Path = OUT, family: str = FAMILY, seeds: int = typer.Option(5, "--seeds", help="Number of seeds "
                "(seed, seed+1, ...); each is a whole run in OUT/seed-S."),
                n_tasks: Optional[int] = N_TASKS, quick: bool = QUICK,  # noqa: UP045
                progress: bool = PROGRESS, **values: Any) -> None:
    """Every grouping (single, random, gradient similarity, independent, PolicyGradEx and k = 1..4) at an equal
    step budget per task over several seeds: results.json and the main-results table in report.md/html."""
    from policygradex.experiments.compare import MAIN, compare

    def action():
        fam, cfg = _family_and_config(family, n_tasks, quick, values)
        return compare(fam, cfg, seeds, out, progress)

    results: CompareResults = _guarded(action)
    console = Console()
    console.print(f"{results.family}: {results.metric}, mean ± std over seeds {results.seeds}")
    for name, res in results.methods.items():
        gain = results.gains.get(name)
        shown = "" if gain is None or name not in MAIN else f"   PolicyGradEx {gain:+.1f}%"
        console.print(f"{name:>20}: {res.mean:8.1f} ± {res.std:.1f}{shown}")
    console.print(f"report: {Path(out) / 'report.html'}")


@app.command("summary")
def summary_cmd(folders: list[Path] = typer.Argument(..., help="compare folders (each holds a results.json)."),
                out: Path = typer.Option(Path("results/summary.png"), "--out", help="The figure (PNG) to write.")
                ) -> None:
    """One figure over several ``compare`` folders: a panel per family, each method's mean and spread over seeds."""
    from policygradex.experiments.report import plot_summary
    from policygradex.experiments.results import read_compare_results

    def action():
        missing = [str(f) for f in folders if not (f / "results.json").is_file()]
        if missing:
            raise PGXError(f"no results.json in {', '.join(missing)}; give folders written by policygradex compare")
        if out.suffix.lower() != ".png":
            raise PGXError(f"--out {out} must end in .png")
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_summary(out, [read_compare_results(f / "results.json") for f in folders])

    _guarded(action)
    print(f"summary: {out}")


validate_app = typer.Typer(no_args_is_help=True, **PLAIN, help="The paper's claims measured in a run folder; each "
                           "study writes a JSON file there and a section of the report.")
app.add_typer(validate_app, name="validate")

STUDY_HELP = {
    "approx": "First-order error of log pi at relative parameter distances (approx.json).",
    "ground-truth": "Fine-tune theta* on the estimator's subsets; NMI, Spearman and speedup (validation.json).",
    "ablate": "NMI and estimation time against d, m, depth and projection back-end (ablation.json).",
    "generalization": "Hessian trace, Ju et al.'s Hessian bound and the observed generalisation gap of theta* "
                      "fine-tuned on sampled subsets (generalization.json).",
}


def _study_command(study: str):
    def command(out: Path = OUT, family: str = FAMILY, n_tasks: Optional[int] = N_TASKS,  # noqa: UP045
                quick: bool = QUICK, progress: bool = PROGRESS, **values: Any) -> None:
        import json

        from policygradex.experiments.validate import run_study

        def action():
            fam, cfg = _family_and_config(family, n_tasks, quick, values)
            return run_study(study, fam, cfg, out, progress)

        result = _guarded(action)
        shown = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
        print(json.dumps(shown if study != "approx" else {**shown, "rows": result["rows"]}))

    command.__doc__ = STUDY_HELP[study]
    return with_config_options(command, validate=True)


for _study in STUDY_HELP:
    validate_app.command(_study, cls=ConfigCommand)(_study_command(_study))


@app.command("tasks")
def tasks_cmd() -> None:
    """List the built-in task families and what varies across their tasks."""
    from policygradex.tasks import FAMILIES

    # one block per family, wrapped at spaces to the terminal: a four-column table is too narrow at 80 columns
    # and cut the metaworld: and mo: examples
    width = max(min(shutil.get_terminal_size().columns, 100), 40)
    for i, (name, info) in enumerate(FAMILIES.items()):
        rows = [("tasks", info.summary), ("varies", info.varies)]
        if info.extra:
            rows.append(("needs", f'pip install "policygradex[{info.extra}]"'))
        lines = [typer.style(name, bold=True)]
        for label, text in rows:
            lines.append(textwrap.fill(text, width, initial_indent=f"  {label:<8}", subsequent_indent=" " * 10,
                                       break_on_hyphens=False))
        typer.echo(("\n" if i else "") + "\n".join(lines))


bench_app = typer.Typer(no_args_is_help=True, **PLAIN, help="Benchmarks; each prints one JSON object per line.")
app.add_typer(bench_app, name="bench")


def _print_rows(rows) -> None:
    import json

    for row in rows:
        print(json.dumps(row), flush=True)


@bench_app.command("features")
def bench_features_cmd(
    sizes: str = typer.Option("0.5M,3M,20M", help="Policy sizes (actor parameters): any of 0.5M, 3M, 20M."),
    transitions: int = typer.Option(2048, help="Transitions per batch for the floor and factored."),
    gaussian_transitions: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Transitions for the (slow) gaussian back-end; default one batch of its memory budget."),
    d: int = typer.Option(400, help="Projection dimension."),
    device: Optional[str] = typer.Option(None, help="torch device; default cuda when available."),  # noqa: UP045
) -> None:
    """Projected-gradient throughput: floor (forward+backward) vs factored vs gaussian."""
    from policygradex.experiments.bench import POLICY_SIZES, bench_features

    chosen = [s.strip() for s in sizes.split(",") if s.strip()]
    if unknown := [s for s in chosen if s not in POLICY_SIZES]:
        raise _fail(f"unknown --sizes {unknown}; choose from {', '.join(POLICY_SIZES)}")
    _print_rows(bench_features(chosen, transitions, d, gaussian_transitions, device))


@bench_app.command("surrogate")
def bench_surrogate_cmd(
    m: int = typer.Option(1000, help="Number of subsets."),
    d: int = typer.Option(400, help="Projection dimension."),
    rows_per_task: int = typer.Option(2048, help="Transitions per task (cartpole family)."),
    device: Optional[str] = typer.Option(None, help="torch device for the exact solver."),  # noqa: UP045
) -> None:
    """Subset solves: newton-stats vs exact on cartpole features (time, Spearman of the scores)."""
    from policygradex.experiments.bench import bench_surrogate

    _print_rows(bench_surrogate(m, d, rows_per_task, device=device))


@bench_app.command("grouping")
def bench_grouping_cmd(
    families: str = typer.Option("copies,mild-cartpole,planted,planted-100x10,cartpole",
                                 help="Comma-separated; any of copies, mild-cartpole, planted, planted-100x10, "
                                      "lottery, cartpole, lunar_lander."),
    seeds: str = typer.Option("0-9", help="Seeds: a range 0-9 or a list 0,3,5."),
    n_tasks: int = typer.Option(8, help="Tasks of the copies and mild-cartpole families."),
    quick: bool = typer.Option(False, help="The families' quick budgets (a smoke run)."),
    family_seed: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Draw every family with this seed (as compare does); default: each run's own seed."),
    out: Optional[Path] = typer.Option(  # noqa: UP045
        None, help="Keep each run's folder here and resume from it (re-measure a grouping rule in seconds)."),
) -> None:
    """Grouping against the known answer, per family and seed: k, NMI (and gradient similarity's), null p-value,
    stability, seconds."""
    from policygradex.experiments.bench import GROUPING_FAMILIES, bench_grouping

    chosen = [f.strip() for f in families.split(",") if f.strip()]
    if unknown := [f for f in chosen if f not in GROUPING_FAMILIES]:
        raise _fail(f"unknown --families {unknown}; choose from {', '.join(GROUPING_FAMILIES)}")
    _print_rows(bench_grouping(chosen, _seeds(seeds), n_tasks, quick, family_seed, out))


@bench_app.command("routing")
def bench_routing_cmd(
    seeds: str = typer.Option("0-4", help="Seeds of the runs: a range 0-4 or a list 0,3,5."),
    family_seed: int = typer.Option(0, help="Seed the cartpole family is drawn with (compare's)."),
    quick: bool = typer.Option(False, help="The family's quick budgets (a smoke run)."),
) -> None:
    """Cartpole test tasks routed to a group of the other force direction, per seed and routing rule."""
    from policygradex.experiments.bench import bench_routing

    _print_rows(bench_routing(_seeds(seeds), family_seed, quick))


def _seeds(text: str) -> list[int]:
    """--seeds: a range like 0-9 or a list like 0,3,5."""
    try:
        lo, _, hi = text.partition("-")
        chosen = list(range(int(lo), int(hi) + 1)) if hi else [int(s) for s in text.split(",")]
    except ValueError:
        raise _fail(f"--seeds takes a range like 0-9 or a list like 0,3,5; got {text!r}") from None
    if not chosen or min(chosen) < 0:
        raise _fail(f"--seeds must name seeds >= 0; got {text!r}")
    return chosen


@bench_app.command("ppo")
def bench_ppo_cmd(
    envs: str = typer.Option("CartPole-v1,LunarLander-v3,reach-v3",
                             help="Comma-separated; any of CartPole-v1, LunarLander-v3, reach-v3 (Meta-World), "
                                  "Pendulum-v1 (Gaussian actions, a cheap env)."),
    seeds: str = typer.Option("0-2", help="Seeds: a range 0-2 or a list 0,3,5."),
    steps: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Environment steps per training; default per env (100k, 200k, 50k, Pendulum 100k)."),
    eval_episodes: int = typer.Option(10, help="Episodes of the final return."),
) -> None:
    """train_ppo against Stable-Baselines3's PPO: steps/s and final return at the same settings (bench extra)."""
    from policygradex.experiments.bench import PPO_ENVS, bench_ppo

    chosen = [e.strip() for e in envs.split(",") if e.strip()]
    if unknown := [e for e in chosen if e not in PPO_ENVS]:
        raise _fail(f"unknown --envs {unknown}; choose from {', '.join(PPO_ENVS)}")
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise _fail("bench ppo compares with Stable-Baselines3: pip install 'policygradex[bench]'") from None
    _print_rows(bench_ppo(chosen, _seeds(seeds), steps, eval_episodes))


def main() -> None:
    try:
        app()
    except PGXError as exc:  # raised outside a command's own handler (option parsing helpers)
        Console(stderr=True).print(f"error: {error_message(exc)}", highlight=False, markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
