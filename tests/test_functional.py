"""The three functions of the paper's math against plain loop references written here independently."""
import math

import pytest
import torch

from tsam_diffusion.functional import gaussian_kernel, similarity_matrix, step_sizes, text_attention_matrix, tsam_loss


# ---------------------------------------------------------------- plain references (python floats, loops)
def ref_text_attention(attn, keep, bidirectional, gamma):
    L, H, N, _ = attn.shape
    a = attn.double().tolist()
    Tp = [[sum(a[l][h][i][j] for l in range(L) for h in range(H)) / (L * H) for j in range(N)] for i in range(N)]
    if bidirectional:
        Tp = [[(Tp[i][j] + Tp[j][i]) / 2 if j <= i else 0.0 for j in range(N)] for i in range(N)]
    n = len(keep)
    out = []
    for r in range(n):
        row = [Tp[keep[r]][keep[c]] ** gamma if c <= r else 0.0 for c in range(n)]
        s = sum(row)
        out.append([x / s for x in row])
    return torch.tensor(out)


def ref_similarity(A, h, w, sigma, ks, normalize, center=False):
    M, n = A.shape
    a = A.double().tolist()
    maps = [[[a[y * w + x][k] for x in range(w)] for y in range(h)] for k in range(n)]
    if sigma > 0 and ks > 1:
        c = (ks - 1) / 2
        g = [math.exp(-(((i - c) / (2 * sigma)) ** 2)) for i in range(ks)]
        kern = [[g[i] * g[j] for j in range(ks)] for i in range(ks)]
        tot = sum(map(sum, kern))
        kern = [[v / tot for v in row] for row in kern]
        p = ks // 2

        def refl(i, size):  # reflect padding without repeating the edge
            if i < 0:
                return -i
            if i >= size:
                return 2 * (size - 1) - i
            return i

        maps = [[[sum(kern[dy][dx] * m[refl(y + dy - p, h)][refl(x + dx - p, w)] for dy in range(ks) for dx in range(ks))
                  for x in range(w)] for y in range(h)] for m in maps]
    flat = [[v for row in m for v in row] for m in maps]
    if center:
        flat = [[v - sum(f) / len(f) for v in f] for f in flat]
    C = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            dot = sum(x * y for x, y in zip(flat[i], flat[j]))
            C[i][j] = dot / (math.sqrt(sum(x * x for x in flat[i])) * math.sqrt(sum(y * y for y in flat[j])))
            if center:
                C[i][j] = (1.0 + C[i][j]) / 2
    S = [[0.0] * n for _ in range(n)]
    for i in range(n):
        if normalize == "full":
            tot = sum(C[i])
            S[i] = [C[i][j] / tot for j in range(n)]
        else:
            tot = sum(C[i][k] for k in range(i + 1))
            S[i] = [C[i][j] / tot if j <= i else 0.0 for j in range(n)]
    return torch.tensor(S)


def ref_loss(T, S, variant):
    n = T.shape[0]
    t, s = T.double().tolist(), S.double().tolist()
    if variant == "l1":
        return sum((i + 1) / n * sum(abs(t[i][j] - s[i][j]) for j in range(i + 1)) for i in range(n))
    total = 0.0
    for r in range(1, n):
        dot = sum(t[r][j] * s[r][j] for j in range(r))
        nt = math.sqrt(sum(t[r][j] ** 2 for j in range(r)))
        ns = math.sqrt(sum(s[r][j] ** 2 for j in range(r)))
        total += 0.2 * r * (1 - dot / (nt * ns))
    return total


def random_attention(L, H, N, seed, causal=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(L, H, N, N, generator=g) * 2
    if causal:
        logits = logits.masked_fill(torch.triu(torch.ones(N, N, dtype=torch.bool), 1), float("-inf"))
    return logits.softmax(-1)


def random_maps(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).softmax(-1)  # cross-attention rows are distributions over tokens


# ---------------------------------------------------------------- text_attention_matrix
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 2.0, 4.0])
def test_text_attention_matches_reference(bidirectional, gamma):
    attn = random_attention(3, 4, 9, seed=1, causal=not bidirectional)
    keep = [1, 2, 3, 4, 5, 6] if not bidirectional else [0, 1, 2, 3, 4, 5, 6]
    got = text_attention_matrix(attn, keep, bidirectional=bidirectional, gamma=gamma)
    torch.testing.assert_close(got, ref_text_attention(attn, keep, bidirectional, gamma).float(), rtol=1e-5, atol=1e-6)
    assert got.dtype == torch.float32
    assert torch.allclose(got.sum(-1), torch.ones(len(keep)))
    assert torch.equal(got, torch.tril(got))


def test_text_attention_accepts_layer_list_slice_and_half():
    attn = random_attention(2, 3, 8, seed=2)
    layers = [a.half() for a in attn]  # what transformers returns: a sequence of [H, N, N]
    got = text_attention_matrix(layers, slice(1, 6), gamma=2.0)
    want = ref_text_attention(attn.half().float(), [1, 2, 3, 4, 5], False, 2.0)
    torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-5)
    assert got.dtype == torch.float32


def test_text_attention_batch_broadcasts():
    attn = torch.stack([random_attention(2, 2, 7, seed=s) for s in (3, 4)])  # [2, L, H, N, N]
    got = text_attention_matrix(attn, torch.tensor([1, 2, 3, 4]), gamma=3.0)
    for b in range(2):
        torch.testing.assert_close(got[b], text_attention_matrix(attn[b], [1, 2, 3, 4], gamma=3.0))


def test_text_attention_example_numbers():
    # one layer, one head, hand-computed: keep tokens 1..2 of a 3-token causal map
    attn = torch.tensor([[[[1.0, 0, 0], [0.5, 0.5, 0], [0.6, 0.1, 0.3]]]])
    got = text_attention_matrix(attn, [1, 2], gamma=2.0)
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0], [0.01 / 0.10, 0.09 / 0.10]]))


# ---------------------------------------------------------------- similarity_matrix
def test_gaussian_kernel_is_attend_and_excite_kernel():
    e = math.exp(-1.0)  # sigma=0.5: weight exp(-((x-c)/(2*0.5))^2) = exp(-1) at distance 1
    w = torch.tensor([e, 1.0, e])
    torch.testing.assert_close(gaussian_kernel(3, 0.5), torch.outer(w, w) / torch.outer(w, w).sum())


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("normalize", ["causal", "full"])
@pytest.mark.parametrize("sigma,ks", [(0.5, 3), (1.0, 5), (0.0, 3), (0.5, 1)])
def test_similarity_matches_reference(normalize, sigma, ks, center):
    h, w, n = 6, 5, 4
    A = random_maps((h * w, n), seed=5)
    got = similarity_matrix(A, h, w, sigma=sigma, kernel_size=ks, normalize=normalize, center=center)
    torch.testing.assert_close(got, ref_similarity(A, h, w, sigma, ks, normalize, center).float(), rtol=1e-5, atol=1e-6)
    if normalize == "causal":
        assert torch.equal(got, torch.tril(got))
        assert torch.allclose(got.sum(-1), torch.ones(n))


def test_similarity_batch_broadcasts_and_is_float32():
    A = random_maps((2, 3, 16, 5), seed=6).half()
    got = similarity_matrix(A, 4, 4)
    assert got.shape == (2, 3, 5, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got[1, 2], similarity_matrix(A[1, 2].float(), 4, 4))


def test_similarity_of_identical_and_disjoint_maps():
    A = torch.zeros(16, 3)
    A[:8, 0] = 1  # top half
    A[:8, 1] = 1  # the same
    A[8:, 2] = 1  # bottom half, disjoint
    S = similarity_matrix(A, 4, 4, sigma=0, normalize="full")
    torch.testing.assert_close(S[1], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(S[2], torch.tensor([0.0, 0.0, 1.0]))


def test_centred_similarity_sees_patterns_on_a_uniform_level():
    """Maps = a large uniform level + a small pattern: eq. 7's cosine is ~1 for every pair (and flat),
    the centred one compares the patterns (two maps share one, the third has the opposite)."""
    pattern = torch.zeros(16)
    pattern[:8] = 1.0
    A = 1.0 + 0.01 * torch.stack([pattern, pattern, 1 - pattern], dim=-1)
    plain = similarity_matrix(A, 4, 4, sigma=0, normalize="full")
    torch.testing.assert_close(plain, torch.full((3, 3), 1 / 3), atol=1e-4, rtol=0)
    centred = similarity_matrix(A, 4, 4, sigma=0, normalize="full", center=True)  # C = (1 + r) / 2: r = 1, 1, -1
    torch.testing.assert_close(centred, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    # with random small patterns the centred loss has a usable gradient where the plain one is almost flat
    T = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    B = (1.0 + 0.01 * torch.rand(16, 3, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    grads = [torch.autograd.grad(tsam_loss(T, similarity_matrix(B, 4, 4, sigma=0, center=c)), B)[0].norm() for c in (False, True)]
    assert grads[1] > 20 * grads[0]


def test_similarity_rejects_wrong_size():
    with pytest.raises(ValueError, match="height \\* width"):
        similarity_matrix(torch.rand(10, 3), 4, 4)


def test_similarity_gradient_is_finite_with_zero_padded_tokens():
    A = random_maps((16, 4), seed=7).requires_grad_(True)
    padded = torch.cat([A, torch.zeros(16, 2)], dim=-1)
    S = similarity_matrix(padded, 4, 4)
    S.sum().backward()
    assert torch.isfinite(A.grad).all()
    torch.testing.assert_close(S[:4, :4], similarity_matrix(A, 4, 4))
    assert torch.equal(S[4:], torch.zeros(2, 6))


# ---------------------------------------------------------------- tsam_loss
@pytest.mark.parametrize("variant", ["l1", "cosine"])
def test_loss_matches_reference(variant):
    T = text_attention_matrix(random_attention(2, 2, 8, seed=8), list(range(1, 7)), gamma=2.0)
    S = similarity_matrix(random_maps((25, 6), seed=9), 5, 5)
    got = tsam_loss(T, S, variant=variant)
    assert got.shape == () and got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_loss(T, S, variant), rel=1e-5)


def test_loss_l1_hand_computed():
    T = torch.tensor([[1.0, 0], [0.5, 0.5]])
    S = torch.tensor([[1.0, 0], [0.2, 0.8]])
    # rho = (1/2, 2/2): 0.5 * 0 + 1.0 * (0.3 + 0.3)
    assert tsam_loss(T, S).item() == pytest.approx(0.6)
    assert tsam_loss(T, T).item() == 0.0
    assert tsam_loss(T, T, variant="cosine").item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("variant", ["l1", "cosine"])
def test_loss_with_lengths_equals_cropped(variant):
    T5 = text_attention_matrix(random_attention(1, 2, 7, seed=10), [1, 2, 3, 4, 5])
    T3 = text_attention_matrix(random_attention(1, 2, 7, seed=11), [1, 2, 3])
    S5 = similarity_matrix(random_maps((16, 5), seed=12), 4, 4)
    S3 = similarity_matrix(random_maps((16, 3), seed=13), 4, 4)
    T = torch.zeros(2, 5, 5)
    S = torch.zeros(2, 5, 5)
    T[0], S[0] = T5, S5
    T[1, :3, :3], S[1, :3, :3] = T3, S3
    got = tsam_loss(T, S, variant=variant, lengths=torch.tensor([5, 3]))
    torch.testing.assert_close(got, torch.stack([tsam_loss(T5, S5, variant=variant), tsam_loss(T3, S3, variant=variant)]))


def test_loss_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        tsam_loss(torch.eye(2), torch.eye(2), variant="l2")


# ---------------------------------------------------------------- step sizes
def test_step_sizes():
    got = step_sizes(40.0, 50)
    assert got[0] == pytest.approx(40.0)
    assert got[-1] == pytest.approx(40.0 * math.sqrt(0.5))
    assert got[10] == pytest.approx(40.0 * math.sqrt(1.0 - 0.5 * 10 / 49))
    assert step_sizes(3.0, 4, "constant") == [3.0] * 4
