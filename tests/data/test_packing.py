"""Packing: layout, masks, and the same per-token loss packed as unpacked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tuner.data import PackedDataset, packed_block_causal_mask, padded_collate_packed, padded_collate_sft
from tuner.data.packing import document_ids, packed_flex_block_mask
from tuner.errors import TunerError


def _samples(lengths, masked_prefix=2, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        t = torch.randint(1, vocab, (n,), generator=g).tolist()
        labels = [-100] * min(masked_prefix, n) + t[masked_prefix:]
        out.append({"tokens": t, "labels": labels})
    return out


def test_pack_layout():
    ds = _samples([5, 4, 6, 3])
    packed = PackedDataset(ds, max_seq_len=10, padding_idx=0)
    assert len(packed) == 2
    p0, p1 = packed[0], packed[1]
    assert p0["seq_lens"].tolist() == [5, 4, 1] and p1["seq_lens"].tolist() == [6, 3, 1]
    # Padding positions continue after the last document's (torchtune's layout; never scored).
    assert p0["input_pos"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert p0["tokens"].tolist() == ds[0]["tokens"] + ds[1]["tokens"] + [0]
    # Every document's first label is -100; the rest are the sample's labels; padding is -100.
    want = [-100] + ds[0]["labels"][1:] + [-100] + ds[1]["labels"][1:] + [-100]
    assert p0["labels"].tolist() == want


def test_split_across_pack_and_too_long():
    ds = _samples([7, 7])
    packed = PackedDataset(ds, max_seq_len=5, split_across_pack=True)
    assert [p["seq_lens"].tolist() for p in packed] == [[5], [2, 3], [4, 1]]
    assert packed[1]["tokens"].tolist()[:2] == ds[0]["tokens"][5:]
    # A split sample keeps its positions: its continuation starts where the first part stopped.
    assert [p["input_pos"].tolist() for p in packed] == [[0, 1, 2, 3, 4], [5, 6, 0, 1, 2], [3, 4, 5, 6, 4]]
    assert packed[1]["labels"].tolist()[0] == -100  # no context for it in this pack
    with pytest.raises(
        TunerError, match="Dataset sample is too long: sample 0 has 7 tokens, more than the packed max_seq_len 5"
    ):
        PackedDataset(ds, max_seq_len=5)
    assert len(PackedDataset(_samples([3] * 10), max_seq_len=6, max_packs=2)) == 2


def test_block_causal_mask():
    m = packed_block_causal_mask([[2, 3], [5]])
    assert m.shape == (2, 5, 5) and m.dtype == torch.bool
    want0 = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(m[0], want0)
    assert torch.equal(m[1], torch.ones(5, 5, dtype=torch.bool).tril())


def test_flex_block_mask_matches_dense():
    from torch.nn.attention.flex_attention import flex_attention

    lens = [[3, 5, 8], [10, 6]]
    bm = packed_flex_block_mask(document_ids(lens), device="cpu")
    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=packed_block_causal_mask(lens)[:, None])
    torch.testing.assert_close(flex_attention(q, k, v, block_mask=bm), dense)
    batch = padded_collate_packed(PackedDataset(_samples([5, 4, 6, 3]), max_seq_len=10), use_flex=True, device="cpu")
    assert type(batch["mask"]).__name__ == "BlockMask"


class TinyCausalLM(nn.Module):
    """A one-layer decoder in plain PyTorch: learned positions from input_pos, bool-mask attention."""

    def __init__(self, vocab=50, dim=32, heads=4, max_pos=64):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, dim), nn.Embedding(max_pos, dim)
        self.qkv, self.o = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.out, self.heads = nn.Linear(dim, vocab), heads

    def forward(self, tokens, *, mask=None, input_pos=None):
        b, s = tokens.shape
        if input_pos is None:
            input_pos = torch.arange(s)[None].expand(b, s)
        if mask is None:
            mask = torch.ones(s, s, dtype=torch.bool).tril()[None].expand(b, s, s)
        x = self.emb(tokens) + self.pos(input_pos)
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        return self.out(x + self.mlp(x))


def _per_token_losses(model, batch):
    """Losses of every trained position, in order, with the usual shift (logits[i] vs labels[i+1])."""
    kwargs = {k: batch[k] for k in ("mask", "input_pos") if k in batch}
    logits = model(batch["tokens"], **kwargs)
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="none", ignore_index=-100)
    return loss[labels.flatten() != -100]


def _compare(model, samples, max_seq_len):
    torch.manual_seed(0)
    unpacked = torch.cat([_per_token_losses(model, padded_collate_sft([s])) for s in samples])
    packs = PackedDataset(samples, max_seq_len=max_seq_len)
    batch = padded_collate_packed([packs[i] for i in range(len(packs))])
    packed = _per_token_losses(model, batch)
    assert packed.numel() == unpacked.numel() > 0
    torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=1e-5)
    # And the mean loss the recipe would report is the same.
    assert math.isclose(packed.mean().item(), unpacked.mean().item(), rel_tol=1e-5)


def test_packed_equals_unpacked_loss_plain_model():
    torch.manual_seed(0)
    model = TinyCausalLM().eval()
    with torch.no_grad():
        _compare(model, _samples([5, 9, 4, 12, 7, 3]), max_seq_len=16)


def test_packed_equals_unpacked_loss_transformer_decoder():
    from tuner.models.llama3 import llama3

    torch.manual_seed(0)
    model = llama3(vocab_size=50, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=64).eval()
    with torch.no_grad():
        _compare(model, _samples([5, 9, 4, 12, 7, 3]), max_seq_len=16)


def test_packed_real_chat_data(smollm2_dir, chat_jsonl):
    from tuner.data.tokenizers import smollm2_tokenizer
    from tuner.datasets import chat_dataset

    tok = smollm2_tokenizer(str(smollm2_dir), max_seq_len=128)
    plain = chat_dataset(tok, source="json", data_files=str(chat_jsonl), split="train[:12]")
    packed = chat_dataset(tok, source="json", data_files=str(chat_jsonl), split="train[:12]", packed=True)
    assert all(p["tokens"].shape == (128,) for p in packed)

    # Same tokens, in order, once the trailing padding document of each pack is dropped.
    def real_tokens(p):
        pad_len = p["seq_lens"][-1].item()
        tail = p["tokens"][-pad_len:]
        is_pad = p["seq_lens"].numel() > 1 and bool((tail == tok.pad_id).all())
        return p["tokens"][: 128 - pad_len] if is_pad else p["tokens"]

    flat = torch.cat([real_tokens(packed[i]) for i in range(len(packed))]).tolist()
    assert flat == [t for i in range(len(plain)) for t in plain[i]["tokens"]]
    torch.manual_seed(0)
    model = TinyCausalLM(vocab=tok.vocab_size, max_pos=128).eval()
    with torch.no_grad():
        _compare(model, [plain[i] for i in range(len(plain))], max_seq_len=128)
