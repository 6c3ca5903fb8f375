"""Hydra's side: the schemas' registration, composition, and the one translation of Hydra's errors.

``register_configs`` stores the schemas of ``config.py`` in Hydra's ConfigStore (and the paper's
resolvers); ``compose_config`` builds the typed config a command line would; ``config_dir`` finds the
yaml configs. This module sits above the schemas: ``config.py`` imports nothing of the project but the
errors.

Unknown keys in every spelling, and Hydra's errors as one paragraph:
Hydra refuses ``optim.rhoo=1`` (the schema has no such field) but suggests ``+optim.rhoo=1``, and a key
added with ``+`` or ``++`` is accepted into the composed config and then dropped by
``OmegaConf.to_object``: the run trains without the setting and exits 0. ``check_known_keys`` compares
the composed config with the typed one and refuses any key the schema does not have, naming the closest
field; ``precheck`` composes the command line once before Hydra runs it, so that Hydra's own errors
(an unknown key, a missing config group option, a value of the wrong type) come out in the project's
words with exit code 2.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from sophia_train.config import OPTIM_SCHEMAS, Config, DataConfig, LoggerConfig, ModelConfig, TrainConfig, flatten
from sophia_train.config.paper import paper_attn_scale, paper_peak_lr
from sophia_train.errors import ConfigError
from sophia_train.interop.pretrained import apply_init_from

#: Command-line flags that change what Hydra composes or do not train: the precheck leaves those to Hydra.
_HYDRA_FLAGS = ("-m", "--multirun")


def unknown_keys(node: DictConfig, typed: Any) -> list[str]:
    """Dotted keys of the composed ``node`` that the typed config ``typed`` (its ``to_object``) does not have."""
    given = set(flatten(OmegaConf.to_container(node, resolve=False)))
    known = set(flatten(OmegaConf.to_container(OmegaConf.structured(typed), resolve=False)))
    prefixes = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    return sorted(k for k in given - known if k not in prefixes and k.split(".")[0] != "hydra")


def unknown_key_message(key: str, known: set[str]) -> str:
    """One paragraph for a key no schema has, with the closest field."""
    group = key.rsplit(".", 1)[0] if "." in key else ""
    same_group = [k for k in known if group and k.startswith(f"{group}.")] or list(known)
    close = difflib.get_close_matches(key, same_group, n=1, cutoff=0.5)
    hint = f"Did you mean {close[0]}? " if close else ""
    where = f"the {group} settings have" if group else "the config has"
    return (f"{key} is not a setting: {where} no field {key.rsplit('.', 1)[-1]!r} (adding it with + or ++ would not make "
            f"it one; the run would ignore it). {hint}Every field and its default: `python -m sophia_train --cfg job "
            f"+model=NAME`, or the schemas in sophia_train/config/schema.py. Nothing was run.")


def check_known_keys(node: DictConfig, typed: Any) -> None:
    """Refuse a composed config holding keys its schema does not (``+optim.rhoo=1``, ``++train.max_step=5``)."""
    unknown = unknown_keys(node, typed)
    if unknown:
        known = set(flatten(OmegaConf.to_container(OmegaConf.structured(typed), resolve=False)))
        raise ConfigError(" ".join(unknown_key_message(k, known) for k in unknown[:3]))


def _clean_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("full_key", "object_type", "reference_type"))]


def translate_hydra_error(e: BaseException) -> ConfigError:
    """Hydra's composition or override error as the project's one paragraph (never its ``+key`` advice for a
    key that no schema has)."""
    text, cause = str(e), str(e.__cause__ or "")
    key = None
    if "To append to your config use +" in text:  # a value override of a key the schema does not have
        m = re.search(r"Could not override '([^']+)'", text)
        key = m.group(1) if m else None
    elif re.search(r"Key '[^']+' not in", cause or text):
        m = re.search(r"full_key: (\S+)", cause or text)
        key = m.group(1) if m else None
    if key and ".kwargs." in key:  # a torch.optim class's keyword arguments: a free-form table
        table, _, name = key.lstrip("+~").rpartition(".")
        value = re.search(rf"{re.escape(key)}=(\S+)", text)
        return ConfigError(f"{table} has no {name!r} yet: it holds keyword arguments for the torch.optim class, and a new "
                           f"one is added with a +: add one with +{table}.{name}={value.group(1) if value else 'VALUE'} (++ adds "
                           f"or replaces).")
    if key:
        return ConfigError(unknown_key_message(key.lstrip("+~"), set(flatten(_schema_keys(Config))) | _optim_keys()))
    head, _, options = text.partition("Available options in")
    message = ": ".join(part for part in (" ".join(_clean_lines(head)), " ".join(_clean_lines(cause)[:1])) if part)
    if options:
        group, _, names = options.split("Config search path")[0].partition(":")
        message += f" Available options in{group}: {', '.join(names.split())}."
    return ConfigError(f"{message[:900]} (`python -m sophia_train` lists the models, optimizers and datasets.)")


def _schema_keys(schema: type) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=False, throw_on_missing=False)


def _optim_keys() -> set[str]:
    return {f"optim.{k}" for schema in OPTIM_SCHEMAS.values() for k in flatten(_schema_keys(schema))}


def _first_values(argv: list[str]) -> list[str] | None:
    """The overrides of one job of a command line (a sweep's first value); None where that cannot be said."""
    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except Exception as e:  # an override Hydra cannot parse: its own message says where
        raise translate_hydra_error(e) from None
    out = []
    for o in parsed:
        if o.key_or_group.lstrip("+~").startswith("hydra"):
            continue  # Hydra's own settings (launcher, sweeper, run dir) do not reach the run's config
        if o.is_sweep_override():
            try:
                first = next(iter(o.sweep_string_iterator()))
            except Exception:  # an interval sweep (optuna): nothing to list
                return None
            out.append(f"{o.get_key_element()}={first}")
        else:
            out.append(o.input_line)
    return out


def precheck(argv: list[str], folder: str) -> None:
    """Compose the command line ``argv`` once (a multirun's first job) and raise ``ConfigError`` for what
    Hydra would refuse, before Hydra prints its own traceback-like text; flags other than ``-m`` skip it."""
    if any(a.startswith("-") and a not in _HYDRA_FLAGS for a in argv):
        return
    overrides = _first_values([a for a in argv if a not in _HYDRA_FLAGS])
    if overrides is None:
        return

    try:
        with initialize_config_dir(config_dir=folder, version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise translate_hydra_error(e) from None


def register_configs() -> None:
    """Register the root and group schemas with Hydra's ConfigStore, and the paper resolvers."""
    for name, fn in (("paper_lr", paper_peak_lr), ("paper_attn_scale", paper_attn_scale)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # Schemas live in their own groups (schema/<group>/<name>), which each yaml names in its defaults
    # list: stored in the groups themselves they would be offered as choices (optim=sophia_schema).
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/train", name="train", node=TrainConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
    for name, schema in OPTIM_SCHEMAS.items():
        cs.store(group="schema/optim", name=name, node=schema)


def config_dir() -> str:
    """The Hydra config folder: $SOPHIA_CONFIG_DIR, else the installed package's ``sophia_train/configs``
    (``pip install .`` puts them there), else the checkout's ``configs/``."""
    if os.environ.get("SOPHIA_CONFIG_DIR"):
        return os.environ["SOPHIA_CONFIG_DIR"]
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return str(installed if (installed / "config.yaml").is_file() else here.parent / "configs")


def compose_config(overrides: list[str]) -> Config:
    """The typed config the command line ``python -m sophia_train *overrides`` would build."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            node = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise translate_hydra_error(e) from None
    apply_init_from(node)
    try:
        typed = OmegaConf.to_object(node)
    except InterpolationResolutionError as e:
        raise ConfigError(str(e).splitlines()[0].split("resolving interpolation: ", 1)[-1]) from None
    check_known_keys(node, typed)
    return typed


def _given_keys(argv: list[str]) -> set[str]:
    """Config keys (and groups) a command line sets, without the +/++/~ prefixes."""
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:
        return set()
    return {o.key_or_group.lstrip("+~") for o in parsed}


def resume_from_folder(argv: list[str]) -> tuple[list[str], dict[str, Any]] | None:
    """``train.out_dir=RUN train.resume=true`` with no ``+model``: the run's own choices to compose with
    (``+model=``, ``optim=``, ``data=``, taken from ``RUN/config.yaml``) and its saved values, so the resume
    continues the run as it was configured; the command line's own settings still apply (and are vetted
    against the checkpoint as on any resume). None when the command line is not such a resume."""
    given = _given_keys(argv)
    values = dict(a.lstrip("+").split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    if "model" in given or "init_from" in given or values.get("train.resume", "").lower() != "true":
        return None
    out_dir = values.get("train.out_dir")
    saved_file = Path(out_dir) / "config.yaml" if out_dir else None
    if saved_file is None or not saved_file.is_file():
        return None
    saved = OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False)
    groups = {"model": saved.get("model", {}).get("name"), "optim": saved.get("optim", {}).get("name"),
              "data": saved.get("data", {}).get("name")}
    folder = Path(config_dir())
    missing = [f"{g}={n}" for g, n in groups.items() if not n or not (folder / g / f"{n}.yaml").is_file()]
    if missing:
        raise ConfigError(f"{saved_file} names {', '.join(missing)}, which this checkout has no config for: give the run's "
                          f"+model=, optim= and data= on the command line as when it started.")
    choices = [f"+model={groups['model']}"] + [f"{g}={groups[g]}" for g in ("optim", "data") if g not in given]
    return choices, saved


#: What one invocation decides for itself: never carried from a saved config into a resume.
NOT_CARRIED = ("train.stop_after_step", "train.resume", "train.overwrite", "train.resume_allow", "train.eval_only")


def overlay_saved(node: DictConfig, saved: dict[str, Any], argv: list[str]) -> None:
    """Put a resumed run's saved values into the composed ``node`` wherever the command line set nothing
    (``NOT_CARRIED`` aside)."""
    given = _given_keys(argv)
    for key, value in sorted(flatten(saved).items()):
        if any(key == g or key.startswith(f"{g}.") for g in given) or key in NOT_CARRIED:
            continue
        if OmegaConf.select(node, key, default="__absent__") != "__absent__":
            OmegaConf.update(node, key, value, merge=False)
