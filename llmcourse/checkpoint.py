"""Checkpoints: one ``.safetensors`` file holding weights, config and trainer state. No pickle, ever.

Layout of a checkpoint file:

- tensors ``model.<name>``: the model's ``state_dict``;
- tensors under other prefixes (``optim.*``, ``rng.*``): trainer state;
- header metadata (JSON strings): ``format``, ``config`` (the :class:`ModelConfig`),
  ``trainer`` (step, history, optimizer hyper-parameters) and ``sha256``, a
  digest of every tensor's bytes *and* of every other metadata entry, so an
  edited config (which would build another model) fails the check too.

Writing goes to a temporary file in the same folder, is flushed to disk, and
is then renamed over the target (:func:`os.replace` is atomic), so a crash
mid-write leaves the previous checkpoint intact. Loading checks the file can be
parsed, the format, the digest, and that names, shapes and the architecture
fields of the config match the model; each failure raises
:class:`CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ModelConfig
from .kernels import kernel_spec

FORMAT = "llmcourse-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and, when given, every metadata entry but ``sha256``."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    if metadata is not None:
        entries = {k: v for k, v in metadata.items() if k != "sha256"}
        h.update(b"\0metadata\0" + json.dumps(entries, sort_keys=True).encode())
    return h.hexdigest()


# Config fields that do not change the function a model computes from its weights
# (training-time settings, the kernel among exact ones, notes). Every other field
# must agree between a checkpoint and the model it is loaded into.
NON_ARCHITECTURE_FIELDS = frozenset({
    "dropout", "init_std", "scaled_residual_init", "fused_kernels", "max_seq_len", "moe_dispatch",
    "router_jitter", "balance_loss_coef", "router_z_loss_coef", "extra",
})


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then atomically rename ``tmp_path`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:  # name the file asked for, not the temporary one beside it
            if e.errno is None:
                raise
            raise OSError(
                e.errno,
                f"could not write {str(path)!r}: {e.strerror or e}. Nothing was changed (an existing file there is "
                "intact); check that the folder is writable and has free space, or choose another path.",
            ) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    tensors: dict[str, torch.Tensor] | None = None,
    trainer: dict[str, Any] | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Write ``model`` (which must carry a ``config``) and optional trainer state to ``path`` atomically.

    A floating-point tensor holding ``nan`` or ``inf`` (weights of a diverged
    run, a corrupted optimizer moment) raises :class:`CheckpointError` naming
    the tensors, and nothing is written: such a file would silently poison
    every run resumed from it. Pass ``allow_nonfinite=True`` to keep one on
    purpose (e.g. to study the divergence).
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError("save_checkpoint needs a model with a ModelConfig in model.config.")
    state = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    for k, v in (tensors or {}).items():
        if k.startswith("model."):
            raise ValueError(f"extra tensor name {k!r} collides with the model's namespace 'model.'.")
        state[k] = v.detach().cpu().clone().contiguous()
    if not allow_nonfinite:
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(
                f"refusing to write {str(path)!r}: {len(bad)} tensor(s) hold nan or inf ({', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}); the run has diverged. Resume from an earlier checkpoint, or pass "
                "allow_nonfinite=True to save it anyway."
            )
    metadata = {
        "format": FORMAT,
        "config": config.to_json(),
        "trainer": json.dumps(trainer or {}, sort_keys=True),
        "sha256_tensors": _digest(state),  # tells an edited header from damaged tensors
    }
    metadata["sha256"] = _digest(state, metadata)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    return path


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    model_state: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint file (format, digest, config)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path, or train and save one first.")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {str(path)!r} is a folder; pass the .safetensors file written by save_checkpoint.")
    if not path.is_file():  # a FIFO would block forever, a device never end
        raise CheckpointError(
            f"checkpoint path {str(path)!r} is not a regular file (a device, pipe or socket); copy the checkpoint to a "
            "file and pass its path."
        )
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with its header's length (8 bytes, little-endian) and then "{"; that length's
    # first byte may well be 0x80, so only a file without the "{" is judged by pickle's and zip's magic bytes.
    if head[8:9] != b"{" and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"):
        raise CheckpointError(
            f"{str(path)!r} is a pickle or torch.save file, not an llmcourse checkpoint (safetensors); it is never "
            "unpickled here. Load it with torch.load(weights_only=True) if you trust it, and save it with save_checkpoint."
        )
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read: it is truncated or corrupt ({e}). "
            "Load an earlier checkpoint or retrain; checkpoints are written atomically, so the previous file is intact."
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file but not an llmcourse checkpoint (format={metadata.get('format')!r}, "
            f"expected {FORMAT!r}); for weights of another library use llmcourse.hf."
        )
    if metadata.get("sha256") != _digest(state, metadata):
        tensors_digest = _digest(state)
        if metadata.get("sha256_tensors") == tensors_digest or metadata.get("sha256") == tensors_digest:
            raise CheckpointError(
                f"checkpoint {str(path)!r} fails its checksum: its tensors are intact but its config or trainer "
                "metadata differ from what was written (edited afterwards, or saved by an llmcourse whose checksum "
                "did not cover them yet). Load an earlier checkpoint, or rebuild the model from a config you trust and "
                "save it again."
            )
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its tensors do not match the checksum recorded when it was written. "
            "Load an earlier checkpoint or retrain."
        )
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        trainer = json.loads(metadata.get("trainer", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unreadable config: {e}") from None
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    others = {k: v for k, v in state.items() if not k.startswith("model.")}
    return Checkpoint(path, config, model_state, others, trainer)


def _config_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: checkpoint {da[k]!r}, model {db[k]!r}" for k in sorted(da) if da[k] != db.get(k)]


def architecture_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The fields on which two configs build models computing different functions from the same weights.

    Everything but :data:`NON_ARCHITECTURE_FIELDS`; ``attn_impl`` counts only when
    one of the two kernels is approximate (Performer).
    """
    da, db = a.to_dict(), b.to_dict()
    out = []
    for k in sorted(set(da) | set(db)):
        if k in NON_ARCHITECTURE_FIELDS or da.get(k) == db.get(k):
            continue
        if k == "attn_impl" and kernel_spec(da[k]).exact and kernel_spec(db[k]).exact:
            continue
        if k == "performer_features" and "performer" not in (da.get("attn_impl"), db.get("attn_impl")):
            continue
        out.append(f"{k}: checkpoint {da.get(k)!r}, model {db.get(k)!r}")
    return out


def check_weights(model: nn.Module, checkpoint: Checkpoint, *, config_mismatch: str = "error") -> None:
    """Raise :class:`CheckpointError` unless the checkpoint fits ``model``; change nothing.

    Names and shapes must match, and so must every architecture field of the
    two configs (:func:`architecture_differences`): RoPE, ALiBi and no position
    encoding have the same tensors, as do two ``ffn`` or ``norm_eps`` values, so
    shapes alone would load such a checkpoint silently into another model.
    ``config_mismatch="allow"`` loads anyway when only config fields differ.
    """
    if config_mismatch not in ("error", "allow"):
        raise ValueError(f"config_mismatch={config_mismatch!r}: use 'error' (the default) or 'allow'.")
    own = model.state_dict()
    problems = []
    missing = sorted(set(own) - set(checkpoint.model_state))
    unexpected = sorted(set(checkpoint.model_state) - set(own))
    if missing:
        problems.append(f"missing from the checkpoint: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"not in the model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    for name in sorted(set(own) & set(checkpoint.model_state)):
        a, b = checkpoint.model_state[name], own[name]
        if a.shape != b.shape:
            problems.append(f"{name}: checkpoint shape {tuple(a.shape)}, model shape {tuple(b.shape)}")
    if problems:
        diffs = _config_differences(checkpoint.config, model.config) if isinstance(getattr(model, "config", None), ModelConfig) else []
        hint = f" Config fields that differ: {'; '.join(diffs)}." if diffs else ""
        raise CheckpointError(
            f"checkpoint {str(checkpoint.path)!r} does not fit this model: {'; '.join(problems[:6])}.{hint} "
            "Build the model from the checkpoint's own config (llmcourse.models.load_model)."
        )
    own_config = getattr(model, "config", None)
    if config_mismatch == "error" and isinstance(own_config, ModelConfig):
        diffs = architecture_differences(checkpoint.config, own_config)
        if diffs:
            raise CheckpointError(
                f"checkpoint {str(checkpoint.path)!r} was saved from another architecture: {'; '.join(diffs)}. Its "
                "tensors fit, but this model would compute something else with them. Build the model from the "
                "checkpoint's own config (llmcourse.models.load_model), or load anyway with "
                "load_weights(model, checkpoint, config_mismatch='allow')."
            )


def load_weights(model: nn.Module, checkpoint: Checkpoint, *, config_mismatch: str = "error") -> None:
    """Copy the checkpoint's weights into ``model``, or explain exactly what does not match (touching nothing).

    ``config_mismatch="allow"`` accepts a model whose architecture fields differ
    from the checkpoint's (names and shapes must still match); see :func:`check_weights`.
    """
    check_weights(model, checkpoint, config_mismatch=config_mismatch)
    model.load_state_dict(checkpoint.model_state, strict=True)
