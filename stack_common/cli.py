"""Hydra entry points for every `python -m ...` command of the project (both packages use it).

`hydra_entry_point(config_name, register, console=...)` wraps a `main(config)` that takes the
*typed* config object (a dataclass, interpolations resolved). Before Hydra starts the job, the
composition is checked: an unknown key, a wrong type or a value that `validate()` refuses prints
one line, `error: ...`, and exits with status 2, before any heavy import or work. In the job the
wrapper sets up logging (stack_common.logs), runs `main`, and
- turns an int that `main` returns into the process's exit status (a training run stopped by a
  signal returns 75: the launcher requeues it);
- turns a user-facing error raised later (ConfigError, a missing input file, and the entry
  point's own `user_errors`) into the same one line and status 2.
The `error: ...` line is printed, not logged: it is the command's answer, and appears even
before logging exists. Everything else is plain Hydra: `--cfg job`, `-m` sweeps,
`hydra.run.dir=...`, the saved `.hydra/config.yaml`.

The config directory is `conf/` at the repository root (or `$DEEPSEEKMATH_CONF_DIR`).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from stack_common.errors import ConfigError
from stack_common.logs import PIPELINE_CONSOLE, ConsoleLayout, configure_logging

# Errors caused by what the user asked for (not bugs): printed as one line, exit status 2.
USER_FACING_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError)
USAGE_EXIT_CODE = 2


def conf_dir() -> str:
    configured = os.environ.get("DEEPSEEKMATH_CONF_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[1] / "conf"
    if not (path / "prepare.yaml").exists():
        raise ConfigError(f"config directory {path} not found (set DEEPSEEKMATH_CONF_DIR to the repository's conf/)")
    return str(path)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # OmegaConf appends "full_key: ... object_type=..." details; keep the key, drop the noise.
    for marker in (" full_key:", " Set the environment variable HYDRA_FULL_ERROR"):
        if marker in text:
            head, _, tail = text.partition(marker)
            key = tail.split()[0] if marker == " full_key:" and tail.split() else ""
            text = f"{head} (key: {key})" if key else head
    return text


def compose_config(config_name: str, overrides: Sequence[str] = (), register: Callable[[], None] | None = None) -> Any:
    """Compose `conf/<config_name>.yaml` with overrides, type-check it and run `validate()`.

    Returns the typed config object. Raises ConfigError with a one-line message.
    """
    if register is not None:
        register()
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        config = OmegaConf.to_object(cfg)
        validate = getattr(config, "validate", None)
        if validate is not None:
            validate()
        return config
    except ConfigError:
        raise
    except Exception as error:  # Hydra and OmegaConf errors: one line, the key named
        raise ConfigError(one_line(error)) from None
    finally:
        GlobalHydra.instance().clear()


# Hydra's own flags: these take a value as the next argument.
_FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--experimental-rerun",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
}
# With these the composition differs from ours (sweeps, another config) or nothing runs.
_SKIP_PRECHECK = {
    "-m",
    "--multirun",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


def overrides_only(argv: Sequence[str]) -> list[str] | None:
    """The override arguments of a Hydra command line, or None when it should not be prechecked."""
    overrides: list[str] = []
    skip_next = False
    for argument in argv:
        if skip_next:
            skip_next = False
            continue
        flag = argument.split("=", 1)[0]
        if flag in _SKIP_PRECHECK:
            return None
        if argument.startswith("-"):
            skip_next = flag in _FLAGS_WITH_VALUE and "=" not in argument
            continue
        overrides.append(argument)
    return overrides


def exit_with_error(error: BaseException | str) -> NoReturn:
    """The one-line answer to a command that cannot run: `error: ...` on stderr, status 2."""
    if isinstance(error, KeyError) and error.args:
        error = error.args[0]  # a KeyError's str() is the repr of its message
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT_CODE)


def hydra_entry_point(
    config_name: str,
    register: Callable[[], None],
    *,
    console: ConsoleLayout = PIPELINE_CONSOLE,
    user_errors: tuple[type[BaseException], ...] = (),
) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """Decorator for an entry point's `main(config)`; the result is called with no arguments
    from `if __name__ == "__main__":` (or with an argument list) and reads `sys.argv` like any
    Hydra app. `user_errors`: more exception types that mean a bad input, not a bug."""
    expected = USER_FACING_ERRORS + tuple(user_errors)

    def decorator(task: Callable[[Any], Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def entry(argv: Sequence[str] | None = None) -> None:
            arguments = list(sys.argv[1:] if argv is None else argv)
            register()
            overrides = overrides_only(arguments)
            if overrides is not None:
                try:
                    compose_config(config_name, overrides)
                except ConfigError as error:
                    exit_with_error(error)

            @hydra.main(version_base="1.3", config_path=conf_dir(), config_name=config_name)
            def run(cfg):
                configure_logging(console)
                try:
                    status = task(OmegaConf.to_object(cfg))
                except expected as error:
                    exit_with_error(error)
                if isinstance(status, int) and not isinstance(status, bool) and status != 0:
                    sys.exit(status)

            saved = sys.argv
            sys.argv = [saved[0], *arguments]
            try:
                run()
            finally:
                sys.argv = saved

        return entry

    return decorator
