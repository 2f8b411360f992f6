"""Dense passage retrieval speed: passage encoding against PyTorch, and exact search latency.

Encoding: B real pydocs passages of S tokens (WordPiece, padded), all-MiniLM-L6-v2's weights in
our jitted `DualEncoder.encode_passages` (mean pooling, L2-normalised) and in transformers'
PyTorch `BertModel` (`torch.inference_mode`, the same pooling), on the same batch; the maximum
difference of the two outputs is printed as a check. Search: `evaluation.retrieval.exact_top_k`
(one jitted matmul + `lax.top_k`) of one query and of a batch of queries against Z random
D-dimensional passages, and FAISS's exact `IndexFlatIP` on the same ones. Times are medians of
interleaved runs after compilation, so load from other processes hits every variant alike.

    .venv/bin/python benchmarks/dpr.py [--batch_size 64] [--length 128] [--passages 100000]

B passages per batch, S passage length, Z passages searched, D embedding size.
"""

import argparse
import dataclasses
import os
import pathlib
import statistics

import faiss
import harness
import jax
import numpy as np
import torch
import transformers

from attention_jax.data import retrieval as retrieval_data
from attention_jax.evaluation import retrieval as search
from attention_jax.interop import pretrained
from attention_jax.models import dual_encoder

RESULTS = pathlib.Path(__file__).parent / "results" / "dpr.md"


def ours(encoder, ids_BS, mask_BS):
    config = dual_encoder.DualEncoderConfig(
        **dataclasses.asdict(encoder.config), pooling="mean", normalize=True, shared_encoder=True
    )
    model = dual_encoder.DualEncoder(config)
    variables = {"params": {"encoder": encoder.encoder}}
    apply = jax.jit(lambda v, i, m: model.apply(v, i, m, method="encode_passages"))
    return lambda: jax.block_until_ready(apply(variables, ids_BS, mask_BS))


def pytorch(folder, ids_BS, mask_BS):
    model = transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    ids, mask = torch.from_numpy(np.asarray(ids_BS, np.int64)), torch.from_numpy(mask_BS)

    def run():
        with torch.inference_mode():
            hidden_BSD = model(input_ids=ids, attention_mask=mask).last_hidden_state
            weight_BS1 = mask[..., None].float()
            mean_BD = (hidden_BSD * weight_BS1).sum(1) / weight_BS1.sum(1)
            return torch.nn.functional.normalize(mean_BD, dim=-1).numpy()

    return run


def timed(variants, repeats):
    """Median seconds of each variant over `repeats` interleaved runs (after one warm-up)."""
    for run in variants.values():
        run()
    return {n: statistics.median(t) for n, t in harness.alternate(variants, repeats).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    B, S, Z, Q = args.batch_size, args.length, args.passages, args.queries
    torch.set_num_threads(os.cpu_count() or 1)
    load_before = os.getloadavg()[0]

    encoder = pretrained.load_pretrained_bert(pretrained.MINILM)
    passages = [e.positives[0] for e in retrieval_data.read_pydocs()[:B]]
    features = retrieval_data.passage_features(passages, encoder.tokenizer, S)
    ids_BS, mask_BS = features["input_ids"], features["input_mask"]
    encoders = {
        "ours: jitted DualEncoder.encode_passages": ours(encoder, ids_BS, mask_BS),
        "transformers BertModel (PyTorch), inference_mode": pytorch(
            pretrained.resolve(pretrained.MINILM), ids_BS, mask_BS
        ),
    }
    difference = np.abs(np.asarray(list(encoders.values())[0]()) - list(encoders.values())[1]())
    encoding = timed(encoders, args.repeats)

    rng = np.random.default_rng(0)
    D = encoder.config.hidden_size
    passages_ZD = rng.normal(size=(Z, D)).astype(np.float32)
    passages_ZD /= np.linalg.norm(passages_ZD, axis=-1, keepdims=True)
    on_device_ZD = jax.device_put(passages_ZD)
    queries_BD = rng.normal(size=(Q, D)).astype(np.float32)
    flat = faiss.IndexFlatIP(D)
    flat.add(passages_ZD)
    searches = {}
    for n in (1, Q):
        queries = f"{n} quer{'y' if n == 1 else 'ies'}"
        searches[f"exact_top_k (JAX), {queries}"] = lambda n=n: search.exact_top_k(
            queries_BD[:n], on_device_ZD, 100
        )
        searches[f"FAISS IndexFlatIP, {queries}"] = lambda n=n: flat.search(queries_BD[:n], 100)
    latency = timed(searches, args.repeats)
    load_after = os.getloadavg()[0]

    base = encoding["ours: jitted DualEncoder.encode_passages"]
    text = "\n".join(
        [
            "# Dense passage retrieval: passage encoding and exact search",
            "",
            f"`make bench-dpr`. Encoding: B = {B} pydocs passages of S = {S} tokens, "
            f"all-MiniLM-L6-v2 (6 layers, D = {D}), mean pooling and L2 normalisation, float32; "
            f"the two outputs differ by at most {difference.max():.1e}. Search: the top 100 of "
            f"Z = {Z:,} random unit vectors of D = {D}. Medians of {args.repeats} interleaved "
            f"runs after compilation. Device: {jax.device_count()} × "
            f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores, PyTorch "
            f"{torch.__version__} with {torch.get_num_threads()} threads; 1-minute load average "
            f"{load_before:.1f} before / {load_after:.1f} after (shared machine).",
            "",
            "| encoder | time per batch (ms) | passages/s | speed / ours |",
            "|---|---|---|---|",
            *(
                f"| {name} | {1e3 * t:.0f} | {B / t:,.0f} | {base / t:.2f}× |"
                for name, t in encoding.items()
            ),
            "",
            f"| search over {Z:,} passages | latency (ms) | queries/s |",
            "|---|---|---|",
            *(
                f"| {name} | {1e3 * t:.1f} | {int(name.split(', ')[1].split()[0]) / t:,.0f} |"
                for name, t in latency.items()
            ),
            "",
        ]
    )
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
