"""The Triton kernels of triton_attention.py (a module of their own: Triton resolves the helpers a kernel
calls from its module's globals, and importing triton costs start-up time that only this path pays).

A head dim DIM is covered by two column tiles, D1 wide and D2 wide (D2 may be 0); where D1 + D2 > DIM the
second tile's columns past DIM are loaded as zeros (they add nothing to the scores) and not stored."""

import triton
import triton.language as tl


@triton.jit
def tile(at, rows, stride, dims, row_ok, DIM: tl.constexpr, MASK_ROWS: tl.constexpr, MASK_DIMS: tl.constexpr,
         TRANSPOSED: tl.constexpr):
    """rows x dims of a (tokens, dim) slice (dims x rows where TRANSPOSED), zeros outside the masks."""
    if TRANSPOSED:
        ptrs = at + rows[None, :] * stride + dims[:, None]
        if MASK_ROWS and MASK_DIMS:
            out = tl.load(ptrs, mask=row_ok[None, :] & (dims < DIM)[:, None], other=0.0)
        elif MASK_ROWS:
            out = tl.load(ptrs, mask=row_ok[None, :], other=0.0)
        elif MASK_DIMS:
            out = tl.load(ptrs, mask=(dims < DIM)[:, None], other=0.0)
        else:
            out = tl.load(ptrs)
    else:
        ptrs = at + rows[:, None] * stride + dims[None, :]
        if MASK_ROWS and MASK_DIMS:
            out = tl.load(ptrs, mask=row_ok[:, None] & (dims < DIM)[None, :], other=0.0)
        elif MASK_ROWS:
            out = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
        elif MASK_DIMS:
            out = tl.load(ptrs, mask=(dims < DIM)[None, :], other=0.0)
        else:
            out = tl.load(ptrs)
    return out


@triton.jit
def online_softmax(s, m_i, l_i, ok, scale_log2, MASKED: tl.constexpr):
    """One key block's probabilities (keys past the sequence masked), the factor that rescales what came
    before, and the running maximum and sum after it."""
    if MASKED:
        s = tl.where(ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
    p = tl.math.exp2(s * scale_log2 - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def step(acc1, acc2, m_i, l_i, q1, q2, k_at, v_at, n0, length, scale_log2, stride_kt, stride_vt, cols, d1, d2,
         dv2, DIM: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, MASKED: tl.constexpr, KT: tl.constexpr,
         OVERLAP: tl.constexpr):
    keys = n0 + cols
    ok = keys < length
    if KT:
        s = tl.dot(q1, tile(k_at, keys, stride_kt, d1, ok, DIM, MASKED, D1 > DIM, True))
    else:
        s = tl.dot(q1, tl.trans(tile(k_at, keys, stride_kt, d1, ok, DIM, MASKED, D1 > DIM, False)))
    if D2 > 0:
        if KT:
            k2 = tile(k_at, keys, stride_kt, d2, ok, DIM, MASKED, D1 + D2 > DIM, True)
        else:
            k2 = tl.trans(tile(k_at, keys, stride_kt, d2, ok, DIM, MASKED, D1 + D2 > DIM, False))
        s = tl.dot(q2, k2, s)
    p, alpha, m_new, l_i = online_softmax(s, m_i, l_i, ok, scale_log2, MASKED)
    v1 = tile(v_at, keys, stride_vt, d1, ok, DIM, MASKED, D1 > DIM, False)
    p = p.to(v1.dtype)
    acc1 = tl.dot(p, v1, acc1 * alpha[:, None])
    if D2 > 0:
        if OVERLAP:
            v2 = tile(v_at, keys, stride_vt, dv2, ok, DIM, MASKED, False, False)
        else:
            v2 = tile(v_at, keys, stride_vt, d2, ok, DIM, MASKED, D1 + D2 > DIM, False)
        acc2 = tl.dot(p, v2, acc2 * alpha[:, None])
    return acc1, acc2, m_new, l_i


@triton.jit
def fresh(BLOCK_M: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, OVERLAP: tl.constexpr):
    """The accumulators of both column tiles, the running maximum and the running sum, before any key."""
    acc1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_M, D1 if OVERLAP else (D2 if D2 > 0 else 16)], dtype=tl.float32)
    return acc1, acc2, tl.full([BLOCK_M], float("-inf"), dtype=tl.float32), tl.zeros([BLOCK_M], dtype=tl.float32)


@triton.jit
def finish(o_at, rows, stride_ot, row_ok, acc1, acc2, l_i, d1, d2, dv2, DIM: tl.constexpr, D1: tl.constexpr,
           D2: tl.constexpr, OVERLAP: tl.constexpr):
    """Divide by the softmax sums and store the head's columns of the rows in the sequence."""
    kind = o_at.dtype.element_ty
    tl.store(o_at + rows[:, None] * stride_ot + d1[None, :], (acc1 / l_i[:, None]).to(kind),
             mask=row_ok[:, None] & (d1 < DIM)[None, :])
    if D2 > 0:
        if OVERLAP:  # the columns the first tile did not cover
            tl.store(o_at + rows[:, None] * stride_ot + dv2[None, :], (acc2 / l_i[:, None]).to(kind),
                     mask=row_ok[:, None] & (dv2 >= D1)[None, :])
        else:
            tl.store(o_at + rows[:, None] * stride_ot + d2[None, :], (acc2 / l_i[:, None]).to(kind),
                     mask=row_ok[:, None] & (d2 < DIM)[None, :])


@triton.jit
def attention(Q, K, V, Out, CU, scale_log2, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
              stride_ot, stride_oh, DIM: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, KT: tl.constexpr, OVERLAP: tl.constexpr):
    block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seq)
    length = tl.load(CU + seq + 1) - start
    if block * BLOCK_M < length:
        first = start.to(tl.int64)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < length
        cols = tl.arange(0, BLOCK_N)
        d1 = tl.arange(0, D1)
        d2 = D1 + tl.arange(0, D2 if D2 > 0 else 16)  # unused when D2 == 0
        dv2 = (DIM - D1) + tl.arange(0, D1)  # OVERLAP's second V tile: the last D1 columns
        q_at = Q + first * stride_qt + head * stride_qh
        k_at = K + first * stride_kt + head * stride_kh
        v_at = V + first * stride_vt + head * stride_vh
        o_at = Out + first * stride_ot + head * stride_oh
        q1 = tile(q_at, rows, stride_qt, d1, row_ok, DIM, True, D1 > DIM, False)
        q2 = q1
        if D2 > 0:
            q2 = tile(q_at, rows, stride_qt, d2, row_ok, DIM, True, D1 + D2 > DIM, False)
        acc1, acc2, m_i, l_i = fresh(BLOCK_M, D1, D2, OVERLAP)
        whole = (length // BLOCK_N) * BLOCK_N
        for n0 in range(0, whole, BLOCK_N):
            acc1, acc2, m_i, l_i = step(acc1, acc2, m_i, l_i, q1, q2, k_at, v_at, n0, length, scale_log2, stride_kt,
                                        stride_vt, cols, d1, d2, dv2, DIM, D1, D2, False, KT, OVERLAP)
        if whole < length:
            acc1, acc2, m_i, l_i = step(acc1, acc2, m_i, l_i, q1, q2, k_at, v_at, whole, length, scale_log2,
                                        stride_kt, stride_vt, cols, d1, d2, dv2, DIM, D1, D2, True, KT, OVERLAP)
        finish(o_at, rows, stride_ot, row_ok, acc1, acc2, l_i, d1, d2, dv2, DIM, D1, D2, OVERLAP)


@triton.jit
def step_tma(acc1, acc2, m_i, l_i, q1, q2, k1_desc, k2_desc, v1_desc, v2_desc, row0, col1, col2, colv2, n0, length,
             scale_log2, cols, d2, HEAD_DIM: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
             MASKED: tl.constexpr):
    # A tile reads past the sequence's last key (the next sequence's rows) and, for the second column tile,
    # past the head's last column (the next head's): those values are zeroed or masked, not just multiplied
    # by zero, so that a non-finite value there cannot reach this head's output.
    ok = n0 + cols < length
    k1 = k1_desc.load([row0 + n0, col1])
    s = tl.dot(q1, tl.trans(k1))
    if D2 > 0:
        k2 = k2_desc.load([row0 + n0, col2])
        if D1 + D2 > HEAD_DIM:
            k2 = tl.where((d2 < HEAD_DIM)[None, :], k2, 0.0)
        s = tl.dot(q2, tl.trans(k2), s)
    p, alpha, m_new, l_i = online_softmax(s, m_i, l_i, ok, scale_log2, MASKED)
    v1 = v1_desc.load([row0 + n0, col1])
    if MASKED:
        v1 = tl.where(ok[:, None], v1, 0.0)
    p = p.to(v1.dtype)
    acc1 = tl.dot(p, v1, acc1 * alpha[:, None])
    if D2 > 0:
        v2 = v2_desc.load([row0 + n0, colv2])
        if MASKED:
            v2 = tl.where(ok[:, None], v2, 0.0)
        acc2 = tl.dot(p, v2, acc2 * alpha[:, None])
    return acc1, acc2, m_new, l_i


@triton.jit
def attention_tma(q1_desc, q2_desc, k1_desc, k2_desc, v1_desc, v2_desc, Out, CU, scale_log2, stride_ot, stride_oh,
                  HEAD_DIM: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, OVERLAP: tl.constexpr):
    block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seq)
    length = tl.load(CU + seq + 1) - start
    if block * BLOCK_M < length:
        col1 = head * HEAD_DIM
        col2 = col1 + D1
        colv2 = col1 + HEAD_DIM - D1 if OVERLAP else col2
        dv2 = (HEAD_DIM - D1) + tl.arange(0, D1)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        q1 = q1_desc.load([start + block * BLOCK_M, col1])
        q2 = q1
        d2 = D1 + tl.arange(0, D2 if D2 > 0 else 16)
        if D2 > 0:
            q2 = q2_desc.load([start + block * BLOCK_M, col2])
            if D1 + D2 > HEAD_DIM:  # the tile reaches into the next head's columns: they must add nothing
                q2 = tl.where((d2 < HEAD_DIM)[None, :], q2, 0.0)
        acc1, acc2, m_i, l_i = fresh(BLOCK_M, D1, D2, OVERLAP)
        whole = (length // BLOCK_N) * BLOCK_N
        for n0 in range(0, whole, BLOCK_N):
            acc1, acc2, m_i, l_i = step_tma(acc1, acc2, m_i, l_i, q1, q2, k1_desc, k2_desc, v1_desc, v2_desc, start,
                                            col1, col2, colv2, n0, length, scale_log2, cols, d2, HEAD_DIM, D1, D2,
                                            False)
        if whole < length:
            acc1, acc2, m_i, l_i = step_tma(acc1, acc2, m_i, l_i, q1, q2, k1_desc, k2_desc, v1_desc, v2_desc, start,
                                            col1, col2, colv2, whole, length, scale_log2, cols, d2, HEAD_DIM, D1,
                                            D2, True)
        o_at = Out + start.to(tl.int64) * stride_ot + head * stride_oh
        finish(o_at, rows, stride_ot, rows < length, acc1, acc2, l_i, tl.arange(0, D1), d2, dv2, HEAD_DIM, D1, D2,
               OVERLAP)
