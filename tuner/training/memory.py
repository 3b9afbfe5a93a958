"""Memory and speed features applied to a decoder's layers: activation checkpointing (offloaded or
not), activation offloading to CPU, the sequence-tiled MLP, per-layer torch.compile, and peak-memory
readings."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint import checkpoint_wrapper as torch_checkpointing

from tuner.errors import ConfigError
from tuner.models.mlp import FeedForward
from tuner.quantization import keep_dense_weights_for_backward
from tuner.training.offloaded_checkpoint import OffloadedCheckpointWrapper, OffloadStreams


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no `layers` ModuleList to wrap")
    return layers


def apply_activation_checkpointing(
    model: nn.Module, keep_nf4_dense: bool = False, every_n_layers: int = 1, offload: bool = False
) -> list[int]:
    """Recompute decoder layers' activations in backward instead of storing them.

    ``every_n_layers``: checkpoint every n-th layer only (the n-th, 2n-th, ...; torchtune's
    ``ac_mode: selective``), trading memory for the recompute of the others. ``keep_nf4_dense``:
    NF4 weights dequantized by the recompute serve the backward too, instead of being dequantized a
    third time (see `keep_dense_weights_for_backward`). ``offload``: each checkpointed layer's input
    waits for backward in pinned CPU memory, not on the GPU (`offloaded_checkpoint`). Returns the
    indices of the checkpointed layers.
    """
    if every_n_layers < 1:
        raise ValueError(f"every_n_layers must be >= 1, got {every_n_layers}")
    layers = decoder_layers(model)
    chosen = [i for i in range(len(layers)) if (i + 1) % every_n_layers == 0]
    streams = OffloadStreams()  # one for the model: its layers prefetch each other
    for i in chosen:
        keep_dense_weights_for_backward(layers[i], keep_nf4_dense)
        if offload:
            layers[i] = OffloadedCheckpointWrapper(layers[i], streams)
        else:
            layers[i] = torch_checkpointing.checkpoint_wrapper(layers[i], preserve_rng_state=True)
    return chosen


def tile_mlps(model: nn.Module, chunk_size: int) -> None:
    """Compute every decoder layer's MLP over chunks of ``chunk_size`` tokens (the ``mlp_chunk_size``
    key; `tuner.models.mlp` says how), so that no ``[tokens, intermediate_dim]`` tensor exists whole."""
    for i, layer in enumerate(decoder_layers(model)):
        mlp = getattr(layer, "mlp", None)
        if not isinstance(mlp, FeedForward):
            raise ConfigError(
                f"mlp_chunk_size needs the gated MLP (FeedForward) in every layer; layer {i}'s is {type(mlp).__name__}",
                "set mlp_chunk_size=null for this model",
            )
        mlp.chunk_size = int(chunk_size)


def set_activation_checkpointing(model: nn.Module, auto_wrap_policy, **kwargs) -> None:
    """Checkpoint the submodules ``auto_wrap_policy`` picks (torchtune's function): a set of module
    classes, or a callable ``(module, recurse, **kwargs) -> bool`` as FSDP's wrap policies."""
    if isinstance(auto_wrap_policy, (set, frozenset, list, tuple)):
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        auto_wrap_policy = ModuleWrapPolicy(set(auto_wrap_policy))
    torch_checkpointing.apply_activation_checkpointing(model, auto_wrap_policy=auto_wrap_policy, **kwargs)


STATIC_LAUNCH_ENV = "TORCHINDUCTOR_STATIC_LAUNCH_USER_DEFINED_TRITON_KERNELS"


def static_launch_user_kernels() -> None:
    """Let compiled graphs launch user-defined Triton kernels (tuner's NF4 ops) through inductor's static
    launcher instead of Triton's Python one: a QLoRA step computing in FP8 makes ~1,200 such launches,
    whose host time left the GPU idle ~57 ms a step; with this, 0.1 ms (docs/benchmarks.md). Inductor's
    compile workers (subprocesses, started at the first compile) read it from the environment, the
    process itself from its config; a user's own setting of the variable wins."""
    import torch._inductor.config as inductor_config

    os.environ.setdefault(STATIC_LAUNCH_ENV, "1")
    inductor_config.static_launch_user_defined_triton_kernels = os.environ[STATIC_LAUNCH_ENV] == "1"


def compile_layers(model: nn.Module) -> None:
    """torch.compile each decoder layer (fast to compile, reused across identical layers).

    A layer under activation checkpointing is compiled inside its checkpoint wrapper (torchtune's
    order): the eager checkpoint drops and recomputes whatever the compiled layer saves. Compiling
    the wrapper instead leaves the recompute to the compiler, which holds more memory (measured on
    the 8B QLoRA shape: docs/benchmarks.md).

    Inductor then launches tuner's Triton kernels (`tuner.quantization.nf4_triton`) as it launches its
    own, without Triton's Python launcher (`static_launch_user_defined_triton_kernels`).
    """
    static_launch_user_kernels()
    for layer in decoder_layers(model):
        getattr(layer, "_checkpoint_wrapped_module", layer).compile()


@contextlib.contextmanager
def activation_offloading(enabled: bool, pin_memory: bool = True) -> Iterator[None]:
    """Keep tensors saved for backward on the CPU while ``enabled`` (trades speed for GPU memory).

    Under activation checkpointing this reaches only what lies outside the checkpointed layers (the
    embedding, the loss); the layers' own inputs are offloaded by ``apply_activation_checkpointing(...,
    offload=True)``, which the trainer asks for when both keys are on."""
    if not enabled:
        yield
        return
    with torch.autograd.graph.save_on_cpu(pin_memory=pin_memory and torch.cuda.is_available()):
        yield


def _allocator_settings_setter():
    """torch's setter of the caching allocator's settings: the accelerator-wide one where it exists
    (torch 2.11 deprecates the CUDA one with a warning on every run), else the CUDA one, else None."""
    return getattr(torch._C, "_accelerator_setAllocatorSettings", None) or getattr(
        torch.cuda.memory, "_set_allocator_settings", None
    )


def use_expandable_segments(device: torch.device) -> bool:
    """Let the CUDA caching allocator grow segments in place (``expandable_segments:True``) unless
    the user set ``PYTORCH_CUDA_ALLOC_CONF`` themselves. Fewer, growable segments leave less memory
    reserved but unused: a lower peak reserved at the same peak allocated and speed (measured in
    docs/benchmarks.md). Returns whether it was switched on."""
    if device.type != "cuda" or "PYTORCH_CUDA_ALLOC_CONF" in os.environ:
        return False
    setter = _allocator_settings_setter()
    if setter is None:  # older torch: only the environment variable, read before CUDA starts
        return False
    setter("expandable_segments:True")
    return True


def memory_stats(device: torch.device) -> dict[str, float]:
    """Peak allocated / reserved / active GPU memory in GiB since the last reset (empty on CPU)."""
    if device.type != "cuda":
        return {}
    stats = torch.cuda.memory_stats(device)
    gib = 1024**3
    return {
        "peak_memory_alloc_gib": stats.get("allocated_bytes.all.peak", 0) / gib,
        "peak_memory_reserved_gib": stats.get("reserved_bytes.all.peak", 0) / gib,
        "peak_memory_active_gib": stats.get("active_bytes.all.peak", 0) / gib,
    }
