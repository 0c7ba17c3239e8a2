"""Causal attention inside each molecule of a packed batch: one Triton program per (molecule, head).

Packed rows (runtime.packing) hold molecules of about 36 tokens in rows of 256 positions. SDPA's
kernels take them with a dense same-molecule mask and work through every 128-wide tile of the row,
so at 201M parameters attention cost about 4 ms of a 33 ms step for a sixteenth of that work
(BENCHMARKS.md, run 9); kernels over each molecule padded to its own row were no faster, since each
of their tiles holds one short molecule. Here a program loads one molecule's queries, keys and
values whole (at most BLOCK of them, a power of two), computes its causal scores, softmax and
output in registers, and writes only that molecule's positions. The backward recomputes the scores
from the saved log-sum-exp, as flash attention does, in one program as well.

A batch describes its molecules by `index` [slots, BLOCK] int32: the flat position (row × row
length + column) of each molecule's tokens in order, -1 past its end and in empty slots, so every
batch of a run has one shape (CUDA graphs). Scores are not scaled (GPT-Neo's scale is 1.0) and are
kept in float32; probabilities meet the values in the inputs' dtype, as in flash attention.

The op takes the three projections as one tensor [rows, length, 3d], as GPT-Neo's fused projection
(runtime.gptneo_sdpa) makes them, and returns their gradient as one tensor: no split and no
concatenation of gradients in between. Positions that hold no molecule get zero output and zero
gradients. On a CPU the kernels run only under Triton's interpreter (TRITON_INTERPRET=1, which the
tests use); `supported` says where training takes them.
"""

from __future__ import annotations

import torch

from chemspec.runtime.packing import block_size

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


HEAD_DIMS = (16, 32, 64, 128)  # tl.arange needs a power of two, tl.dot at least 16
MAX_BLOCK = 128  # one program holds a molecule's BLOCK × BLOCK scores in registers


def supported(device: torch.device, head_dim: int, block: int) -> bool:
    """Whether training on `device` should take these kernels for heads of `head_dim` and molecules of
    `block` slots: CUDA with Triton on a card with bf16 products (compute capability 8 or more),
    HEAD_DIMS, and blocks of up to MAX_BLOCK. Elsewhere the dense mask serves. (Triton's interpreter
    also runs the kernels on a CPU, far slower than SDPA there: the tests call them directly.)"""
    if triton is None or device.type != "cuda" or head_dim not in HEAD_DIMS or block > MAX_BLOCK:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


if triton is not None:

    @triton.jit
    def _positions(INDEX, mol, seq_len, BLOCK: tl.constexpr):
        j = tl.arange(0, BLOCK)
        flat = tl.load(INDEX + mol * BLOCK + j)
        real = flat >= 0
        flat = tl.where(real, flat, 0)
        return j, real, flat // seq_len, flat % seq_len

    @triton.jit
    def _tile(X, row, col, head, s0, s1, s2, real, HEAD_DIM: tl.constexpr):
        d = tl.arange(0, HEAD_DIM)
        return tl.load(X + (row * s0 + head * s1 + col * s2)[:, None] + d[None, :], mask=real[:, None], other=0.0)

    @triton.jit
    def _put(X, row, col, head, s0, s1, s2, real, value, HEAD_DIM: tl.constexpr):
        d = tl.arange(0, HEAD_DIM)
        tl.store(X + (row * s0 + head * s1 + col * s2)[:, None] + d[None, :], value.to(X.dtype.element_ty),
                 mask=real[:, None])

    @triton.jit
    def _molecule(QKV, INDEX, mol, head, seq_len, heads, s0, s1, s2, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
        """Slot numbers, which are real, and the query, key and value tiles of molecule `mol`, head `head`."""
        j, real, row, col = _positions(INDEX, mol, seq_len, BLOCK)
        q = _tile(QKV, row, col, head, s0, s1, s2, real, HEAD_DIM)
        k = _tile(QKV + heads * HEAD_DIM, row, col, head, s0, s1, s2, real, HEAD_DIM)
        v = _tile(QKV + 2 * heads * HEAD_DIM, row, col, head, s0, s1, s2, real, HEAD_DIM)
        return j, real, row, col, q, k, v

    @triton.jit
    def _molecule_attention_forward(QKV, O, LSE, INDEX, seq_len, heads, sq0, sq1, sq2, so0, so1, so2,
                                    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr):
        mol, head = tl.program_id(0), tl.program_id(1)
        j, real, row, col, q, k, v = _molecule(QKV, INDEX, mol, head, seq_len, heads, sq0, sq1, sq2, BLOCK, HEAD_DIM)
        # A slot past the molecule's end also sees itself, so no row of scores is all -inf.
        seen = (j[None, :] <= j[:, None]) & (real[None, :] | (j[None, :] == j[:, None]))
        scores = tl.where(seen, tl.dot(q, tl.trans(k), input_precision=PRECISION), float("-inf"))
        top = tl.max(scores, 1)
        weights = tl.exp(scores - top[:, None])
        total = tl.sum(weights, 1)
        out = tl.dot((weights / total[:, None]).to(v.dtype), v, input_precision=PRECISION)
        _put(O, row, col, head, so0, so1, so2, real, out, HEAD_DIM)
        tl.store(LSE + (mol * heads + head) * BLOCK + j, top + tl.log(total))

    @triton.jit
    def _molecule_attention_backward(QKV, O, DO, LSE, DQKV, INDEX, seq_len, heads, sq0, sq1, sq2,
                                     so0, so1, so2, sd0, sd1, sd2, sg0, sg1, sg2,
                                     BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr):
        mol, head = tl.program_id(0), tl.program_id(1)
        j, real, row, col, q, k, v = _molecule(QKV, INDEX, mol, head, seq_len, heads, sq0, sq1, sq2, BLOCK, HEAD_DIM)
        o = _tile(O, row, col, head, so0, so1, so2, real, HEAD_DIM)
        do = _tile(DO, row, col, head, sd0, sd1, sd2, real, HEAD_DIM)
        lse = tl.load(LSE + (mol * heads + head) * BLOCK + j)
        seen = (j[None, :] <= j[:, None]) & real[None, :] & real[:, None]
        weights = tl.where(seen, tl.exp(tl.dot(q, tl.trans(k), input_precision=PRECISION) - lse[:, None]), 0.0)
        dv = tl.dot(tl.trans(weights.to(do.dtype)), do, input_precision=PRECISION)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        dscores = weights * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dq = tl.dot(dscores.to(k.dtype), k, input_precision=PRECISION)
        dk = tl.dot(tl.trans(dscores.to(q.dtype)), q, input_precision=PRECISION)
        _put(DQKV, row, col, head, sg0, sg1, sg2, real, dq, HEAD_DIM)
        _put(DQKV + heads * HEAD_DIM, row, col, head, sg0, sg1, sg2, real, dk, HEAD_DIM)
        _put(DQKV + 2 * heads * HEAD_DIM, row, col, head, sg0, sg1, sg2, real, dv, HEAD_DIM)


def _heads(x: torch.Tensor, heads: int, parts: int) -> list[torch.Tensor]:
    """x [rows, length, parts × heads × dim] with unit stride along it, as `parts` views
    [rows, length, heads, dim] (the projections' query, key and value; or one output)."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    width = x.shape[-1] // parts
    return [x[..., i * width:(i + 1) * width].unflatten(-1, (heads, width // heads)) for i in range(parts)]


def _strides(*views: torch.Tensor) -> list[int]:
    """Row, head and position strides of each view [rows, length, heads, dim], in the kernels' order."""
    return [stride for x in views for stride in (x.stride(0), x.stride(2), x.stride(1))]


def _precision(x: torch.Tensor) -> str:
    """Exact float32 products for float32 inputs (evaluation), where tl.dot would take TF32: GPT-Neo's
    unscaled scores are large, and rounding them costs loss (BENCHMARKS.md, run 13)."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def _warps(block: int) -> int:
    """4 warps for blocks of up to 64 (on an H200 the fastest for both kernels: BENCHMARKS.md)."""
    return 4 if block <= 64 else 8


@torch.library.custom_op("chemspec::molecule_attention", mutates_args=())
def _attention(qkv: torch.Tensor, index: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    q = _heads(qkv, heads, 3)[0]  # k and v lie heads × dim and twice that further on
    slots, block = index.shape
    rows, length, _, dim = q.shape
    out = qkv.new_zeros(rows, length, heads * dim)
    lse = qkv.new_empty(slots, heads, block, dtype=torch.float32)
    _molecule_attention_forward[(slots, heads)](q, out, lse, index, length, heads,
                                                *_strides(q, *_heads(out, heads, 1)), BLOCK=block,
                                                HEAD_DIM=dim, PRECISION=_precision(qkv), num_warps=_warps(block))
    return out, lse


@_attention.register_fake
def _(qkv, index, heads):
    rows, length, width = qkv.shape
    return qkv.new_empty(rows, length, width // 3), qkv.new_empty(index.shape[0], heads, index.shape[1],
                                                                  dtype=torch.float32)


@torch.library.custom_op("chemspec::molecule_attention_backward", mutates_args=())
def _attention_backward(dout: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                        index: torch.Tensor, heads: int) -> torch.Tensor:
    q = _heads(qkv, heads, 3)[0]
    (o,), (do,) = _heads(out, heads, 1), _heads(dout, heads, 1)
    slots, block = index.shape
    length, dim = q.shape[1], q.shape[3]
    dqkv = torch.zeros_like(qkv, memory_format=torch.contiguous_format)
    dq = _heads(dqkv, heads, 3)[0]
    _molecule_attention_backward[(slots, heads)](q, o, do, lse, dq, index, length, heads,
                                                 *_strides(q, o, do, dq), BLOCK=block, HEAD_DIM=dim,
                                                 PRECISION=_precision(qkv), num_warps=_warps(block))
    return dqkv


@_attention_backward.register_fake
def _(dout, qkv, out, lse, index, heads):
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    qkv, index, heads = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse, index)
    ctx.heads = heads


def _backward(ctx, dout, dlse):
    qkv, out, lse, index = ctx.saved_tensors
    return _attention_backward(dout, qkv, out, lse, index, ctx.heads), None, None


_attention.register_autograd(_backward, setup_context=_setup)


def molecule_attention(qkv: torch.Tensor, index: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention output [rows, length, d] of the projected queries, keys and values qkv
    [rows, length, 3d] (each d = heads × head dim): each molecule's tokens (`index`, module
    docstring) attend causally to their own molecule's, unscaled."""
    if index.dtype != torch.int32 or index.dim() != 2 or index.shape[1] != block_size(index.shape[1]):
        raise ValueError(f"index must be int32 [molecules, power of two >= 16], not {index.dtype} {list(index.shape)}")
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * heads):
        raise ValueError(f"qkv must be [rows, length, 3 × heads × head dim], not {list(qkv.shape)} for {heads} heads")
    if qkv.shape[-1] // (3 * heads) not in HEAD_DIMS:
        raise ValueError(f"heads of {qkv.shape[-1] // (3 * heads)} dims: the kernels take {HEAD_DIMS}")
    if index.device != qkv.device:
        raise ValueError(f"index is on {index.device}, qkv on {qkv.device}")
    return _attention(qkv, index.contiguous(), heads)[0]
