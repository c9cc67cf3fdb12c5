"""The dtype of a backbone's frozen weights: chosen at fit, kept by saving, checked at reload.

``backbone_dtype`` sets the precision the frozen backbone is loaded in; skills, routers and
heads keep float32 master weights whatever it is (their updates are small against the
weights they train, and bfloat16's 8-bit mantissa would round many of them away). A skill
layer casts its input to float32, computes the update there, and adds it to the base
layer's output in the base layer's dtype.
"""

from __future__ import annotations


import torch

from ._warnings import warn_user

BACKBONE_DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("int8", "nf4", "fp4")
_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def supports_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (every CPU does, through torch's kernels)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def resolved_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype ``backbone_dtype=name`` stands for on ``device``, silently (see :func:`chosen_dtype`)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and supports_bfloat16(device) else torch.float32
    dtype = _BY_NAME[name]
    return torch.float32 if dtype is torch.bfloat16 and not supports_bfloat16(device) else dtype


def chosen_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype ``backbone_dtype=name`` loads the backbone in on ``device``; a warning when it falls back.

    ``"auto"`` is bfloat16 on GPUs that support it and float32 elsewhere (on the CPU,
    bfloat16 halves the memory but is slower than float32 in most of torch's kernels).
    """
    dtype = resolved_dtype(name, device)
    if name == "bfloat16" and dtype is not torch.bfloat16:
        warn_user(
            f"backbone_dtype='bfloat16' was asked for, but {device} does not support bfloat16; the backbone is "
            "loaded in float32 instead. Pass backbone_dtype='float16' to halve its memory on this GPU.",
            UserWarning,
        )
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``, as saved in a folder's config."""
    return str(dtype).removeprefix("torch.")


def reload_dtype(saved: str | None, device: torch.device, where: str) -> torch.dtype:
    """The dtype to reload a backbone saved as ``saved`` in (None: float32, a model saved before the option).

    bfloat16 on a device without it falls back to float32 with a warning.
    """
    if saved is None:
        return torch.float32
    if not isinstance(saved, str) or saved not in _BY_NAME:
        raise ValueError(f"{where} names the backbone dtype {saved!r}; expected one of {sorted(_BY_NAME)}. "
                         "Save the model again, or copy the folder anew.")
    if _BY_NAME[saved] is torch.bfloat16 and not supports_bfloat16(device):
        warn_user(
            f"{where} was trained on a bfloat16 backbone, but {device} does not support bfloat16: the backbone is "
            "loaded in float32 instead (its weights' hash is not checked, and predictions may differ slightly).",
            UserWarning,
        )
        return torch.float32
    return _BY_NAME[saved]


def quantization_config(name: str, compute_dtype: torch.dtype):
    """transformers' ``BitsAndBytesConfig`` for ``quantization=name``; ImportError naming the extra without bitsandbytes.

    4-bit weights compute in ``compute_dtype`` (the backbone's dtype) and keep
    float32 quantization constants unquantized (no double quantization), as QLoRA
    trains with ``bnb_4bit_use_double_quant=False`` by default in transformers.
    """
    import importlib.util

    missing = [package for package in ("bitsandbytes", "accelerate") if importlib.util.find_spec(package) is None]
    if missing:
        raise ImportError(
            f"quantization={name!r} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed. Install {'it' if len(missing) == 1 else 'them'} with pip install 'skillfit[quantization]', "
            "or pass quantization=None."
        )
    from transformers import BitsAndBytesConfig

    if name == "int8":
        _drop_int8_cast_notes()
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=name, bnb_4bit_compute_dtype=compute_dtype)


def _drop_int8_cast_notes() -> None:
    """Drop bitsandbytes' "inputs will be cast ... to float16" log line, printed at every 8-bit matmul.

    LLM.int8() always quantizes its inputs through float16; the line would repeat for every
    layer of every step and prediction, and there is nothing a user could change about it.
    """
    import logging

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _Int8CastNoteFilter) for f in logger.filters):
        logger.addFilter(_Int8CastNoteFilter())


class _Int8CastNoteFilter:
    """A logging filter that drops only the 8-bit matmul's float16 cast note."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def saved_quantization(saved: object, where: str) -> str | None:
    """The quantization a folder or pickle names (None: full-precision weights); ValueError if damaged."""
    if saved is not None and saved not in QUANTIZATIONS:
        raise ValueError(f"{where} names the backbone quantization {saved!r}; expected one of {list(QUANTIZATIONS)} "
                         "or none. Save the model again, or copy the folder anew.")
    return saved
