"""In-context evaluation of a language model (Brown et al. 2020, GPT-3, section 2 and appendix
G): no gradient step, the model reads k solved examples and then the query.

    task = load_task("tasks/next_verse.jsonl")          # or an lm-evaluation-harness YAML
    results = evaluate(task, model, params, tokenizer, k=4)

A prompt is the task description, k examples drawn at random (fixed seed) from the task's pool,
each "context<target_delimiter>target", and the query's context, joined by the few-shot
delimiter; it starts with the tokenizer's [CLS], as every pre-training document does. Shots that
would not fit the model's context are dropped, last ones first ("shots" reports how many were
used on average); a query too long even alone keeps its end (lm-evaluation-harness's left
truncation).

Multiple choice is scored by the conditional log-likelihood of each candidate continuation
(the continuation is encoded on its own, so a SentencePiece or WordPiece tokenizer starts it
with a new word, which is the " " target delimiter):

    acc                  argmax_c  log P(c | prompt)
    acc_per_token        argmax_c  log P(c | prompt) / |c|                    (GPT-3's default)
    acc_unconditional    argmax_c  log P(c | prompt) − log P(c | answer_context)

the last one normalising by each candidate's unconditional probability given only the
`answer_context` ("Answer:"), which GPT-3 uses for tasks whose candidates differ in prior
likelihood. All candidates of a batch of prompts are scored in one jitted pass: the prompts,
left-padded, go through the key/value cache once, then every candidate continues from its
prompt's cache (`reuse_prefix=False` runs each prompt + candidate row in full instead, for
comparison). Free-form tasks are scored by greedy generation, cut at the first of the task's
`until` strings, with SQuAD's normalised exact match.

Task files. JSON lines, one example per line,

    {"context": "...", "choices": ["...", "..."], "gold": 1}     multiple choice
    {"context": "...", "answer": "..."}                          free-form

optionally with "split": "fewshot" to put an example in the pool shots are drawn from (without
any, shots come from the other evaluation examples), and optionally a first line without a
"context" that sets the task's fields (`Task`):

    {"description": "...", "fewshot_delimiter": "\\n\\n", "answer_context": "Answer:"}

lm-evaluation-harness YAML files are read where simple: local JSON-lines data
(`dataset_path: json`, `dataset_kwargs.data_files`), `doc_to_text` / `doc_to_target` /
`doc_to_choice` as a document field or a Jinja template (rendered in a sandbox: a task file
never runs code), `description`, `target_delimiter`, `fewshot_delimiter`, `test_split` /
`validation_split`, `fewshot_split`, `output_type` multiple_choice or generate_until and
`generation_kwargs.until`.

B prompts, C candidates, P prompt length, S candidate length, X = B·C rows, V vocabulary.
"""

import ast
import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import jinja2.sandbox
import numpy as np
import yaml

from attention_jax import decoding
from attention_jax.evaluation.squad import normalize_answer
from attention_jax.models import gpt
from attention_jax.models.common import empty_cache


@dataclasses.dataclass(frozen=True)
class Example:
    """One query: its context and either candidates with the right one's index, or an answer."""

    context: str
    choices: tuple[str, ...] = ()
    gold: int = 0
    answer: str = ""


@dataclasses.dataclass(frozen=True)
class Task:
    """Examples to evaluate, the pool shots are drawn from (None: the other examples), and
    how prompts are written."""

    name: str
    examples: tuple[Example, ...]
    pool: tuple[Example, ...] | None = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    answer_context: str = "Answer:"
    until: tuple[str, ...] = ("\n",)

    def __post_init__(self):
        if not self.examples:
            raise ValueError(f"task {self.name!r} has no examples")
        kinds = {bool(e.choices) for e in self.examples + (self.pool or ())}
        if len(kinds) > 1:
            raise ValueError(f"task {self.name!r} mixes multiple-choice and free-form examples")
        for e in self.examples:
            if e.choices and not (len(e.choices) >= 2 and 0 <= e.gold < len(e.choices)):
                raise ValueError(f"task {self.name!r}: {e.context!r} needs ≥ 2 choices and a gold")

    @property
    def multiple_choice(self) -> bool:
        return bool(self.examples[0].choices)

    def target(self, example: Example) -> str:
        return example.choices[example.gold] if example.choices else example.answer

    def shots(self, i: int, k: int, seed: int) -> list[str]:
        """k solved examples for query i, drawn without replacement (never the query itself)."""
        pool = self.pool if self.pool is not None else self.examples[:i] + self.examples[i + 1 :]
        if k > len(pool):
            raise ValueError(f"task {self.name!r}: {k} shots but a pool of {len(pool)}")
        picked = np.random.default_rng([seed, i]).choice(len(pool), k, replace=False)
        return [pool[j].context + self.target_delimiter + self.target(pool[j]) for j in picked]

    def prompt(self, i: int, shots: list[str]) -> str:
        parts = ([self.description] if self.description else []) + shots
        return self.fewshot_delimiter.join(parts + [self.examples[i].context])


FIELDS = ("description", "target_delimiter", "fewshot_delimiter", "answer_context", "until")


def _json_lines(path: pathlib.Path) -> list[dict]:
    """The JSON objects of a JSON-lines file (blank lines skipped); one-line errors."""
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(rows[-1], dict):
                raise ValueError(f"{path}:{number}: a line must be a JSON object")
    return rows


def load_task(path) -> Task:
    """A task from a JSON-lines file or an lm-evaluation-harness YAML (see the module doc)."""
    path = pathlib.Path(path)
    if path.suffix in (".yaml", ".yml"):
        return _load_harness_yaml(path)
    rows = _json_lines(path)
    header = rows.pop(0) if rows and "context" not in rows[0] else {}
    unknown = set(header) - set(FIELDS) - {"name"}
    if unknown:
        raise ValueError(f"{path}: unknown task fields {sorted(unknown)}; expected {FIELDS}")
    examples, pool = [], []
    for number, row in enumerate(rows, 1 + bool(header)):
        try:
            example = Example(
                row["context"],
                tuple(row.get("choices", ())),
                row.get("gold", 0),
                row.get("answer", ""),
            )
        except KeyError:
            raise ValueError(f"{path}:{number}: an example needs a 'context'") from None
        (pool if row.get("split") == "fewshot" else examples).append(example)
    header = {**header, "until": tuple(header.get("until", Task.until))}
    return Task(
        header.pop("name", path.stem), tuple(examples), tuple(pool) if pool else None, **header
    )


_JINJA = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)


def _render(template, doc):
    """lm-evaluation-harness's doc_to_*: a field name, a Jinja template, or a literal."""
    if not isinstance(template, str):
        return template
    if template in doc:
        return doc[template]
    try:
        return _JINJA.from_string(template).render(**doc)
    except jinja2.TemplateError as error:
        raise ValueError(f"template {template!r}: {error}") from None


def _load_harness_yaml(path: pathlib.Path) -> Task:
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"{path}: not a simple task YAML ({first})") from None
    for unsupported in ("include", "process_docs", "group"):
        if unsupported in spec:
            raise ValueError(f"{path}: {unsupported!r} is not supported here")
    files = (spec.get("dataset_kwargs") or {}).get("data_files")
    if spec.get("dataset_path") != "json" or not isinstance(files, dict):
        raise ValueError(f"{path}: only dataset_path: json with dataset_kwargs.data_files is read")
    output_type = spec.get("output_type", "multiple_choice")
    if output_type not in ("multiple_choice", "generate_until"):
        raise ValueError(f"{path}: output_type {output_type!r} is not supported here")

    def read(split):
        return _json_lines(path.parent / files[split])

    def example(doc):
        context, target = _render(spec["doc_to_text"], doc), _render(spec["doc_to_target"], doc)
        if output_type == "generate_until":
            return Example(str(context), answer=str(target))
        choices = _render(spec["doc_to_choice"], doc)
        choices = ast.literal_eval(choices) if isinstance(choices, str) else choices
        gold = int(target) if str(target).isdigit() else list(choices).index(target)
        return Example(str(context), tuple(map(str, choices)), gold)

    split = spec.get("test_split") or spec.get("validation_split")
    if split not in files:
        raise ValueError(f"{path}: the test/validation split {split!r} is not in data_files")
    fewshot = spec.get("fewshot_split")
    return Task(
        spec.get("task", path.stem),
        tuple(map(example, read(split))),
        tuple(map(example, read(fewshot))) if fewshot else None,
        description=spec.get("description", ""),
        target_delimiter=spec.get("target_delimiter", " "),
        fewshot_delimiter=spec.get("fewshot_delimiter", "\n\n"),
        until=tuple((spec.get("generation_kwargs") or {}).get("until", Task.until)),
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _left_padded(prompts, batch_size: int):
    """(prompt_BP, lengths_B): the prompts left-padded to a multiple of 32 tokens, then rows
    of one padding token up to `batch_size` (no candidates, nothing generated is kept)."""
    P = _round_up(max(map(len, prompts)), 32)
    prompt_BP = np.zeros((batch_size, P), np.int32)
    lengths_B = np.ones(batch_size, np.int32)
    for b, prompt in enumerate(prompts):
        prompt_BP[b, P - len(prompt) :], lengths_B[b] = prompt, len(prompt)
    return prompt_BP, lengths_B


@functools.partial(jax.jit, static_argnames=("model", "reuse_prefix"))
def _log_likelihoods(model, params, prompt_BP, lengths_B, cont_BCS, cont_lengths_BC, reuse_prefix):
    """Σ_s log P(c_s | prompt, c_<s) of every candidate: logp_BC."""
    (B, P), (C, S) = prompt_BP.shape, cont_BCS.shape[1:]
    segments_BL, positions_BL = gpt.left_padded(lengths_B, P, P + S)
    cont_segments_XS = (jnp.arange(S) < cont_lengths_BC[..., None]).astype(jnp.int32)
    cont_segments_XS, cont_XS = (x.reshape(B * C, S) for x in (cont_segments_XS, cont_BCS))
    cont_positions_XS = jnp.repeat(positions_BL[:, P:], C, axis=0)
    if reuse_prefix:
        cache = empty_cache(model, params, jnp.zeros((B, P + S), jnp.int32))
        logits_BPV, variables = model.apply(
            {"params": params, "cache": cache},
            prompt_BP,
            segments_BL[:, :P],
            positions_BL[:, :P],
            decode=True,
            mutable=["cache"],
        )
        cache = jax.tree.map(
            lambda x: jnp.repeat(x, C, axis=0) if x.ndim else x, variables["cache"]
        )
        logits_XSV, _ = model.apply(
            {"params": params, "cache": cache},
            cont_XS,
            cont_segments_XS,
            cont_positions_XS,
            decode=True,
            mutable=["cache"],
        )
        last_XV = jnp.repeat(logits_BPV[:, -1], C, axis=0)
    else:

        def rows(prompt_BP, cont_XS):
            return jnp.concatenate([jnp.repeat(prompt_BP, C, axis=0), cont_XS], axis=1)

        logits_XLV = model.apply(
            {"params": params},
            rows(prompt_BP, cont_XS),
            rows(segments_BL[:, :P], cont_segments_XS),
            rows(positions_BL[:, :P], cont_positions_XS),
        )
        last_XV, logits_XSV = logits_XLV[:, P - 1], logits_XLV[:, P:]
    # Token s is predicted at the position before it: the prompt's last, then the candidate's.
    logits_XSV = jnp.concatenate([last_XV[:, None], logits_XSV[:, :-1]], axis=1)
    logp_XSV = jax.nn.log_softmax(logits_XSV.astype(jnp.float32))
    logp_XS = jnp.take_along_axis(logp_XSV, cont_XS[..., None], axis=-1)[..., 0]
    return jnp.where(cont_segments_XS > 0, logp_XS, 0.0).sum(-1).reshape(B, C)


def log_likelihoods(
    model, params, prompts, continuations, *, batch_size: int = 16, reuse_prefix: bool = True
) -> list[np.ndarray]:
    """log P(continuation | prompt) of every candidate of every prompt (token id lists), one
    float64 array per prompt; batches of `batch_size` prompts with all their candidates go
    through one jitted pass, padded to lengths rounded up (32 prompt, 8 candidate tokens) so it
    compiles a few times at most."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} candidate lists")
    if any(not p for p in prompts) or any(not c for cs in continuations for c in cs):
        raise ValueError("every prompt and every candidate needs at least one token")
    longest = max(len(p) + len(c) for p, cs in zip(prompts, continuations, strict=True) for c in cs)
    if longest > model.config.max_len:
        raise ValueError(f"a prompt and candidate of {longest} tokens exceed the context")
    C = max(len(cs) for cs in continuations)
    out = []
    for start in range(0, len(prompts), batch_size):
        batch, cands = (
            prompts[start : start + batch_size],
            continuations[start : start + batch_size],
        )
        prompt_BP, lengths_B = _left_padded(batch, batch_size)
        S = _round_up(max(len(c) for cs in cands for c in cs), 8)
        cont_BCS = np.zeros((batch_size, C, S), np.int32)
        cont_lengths_BC = np.zeros((batch_size, C), np.int32)
        for b, cs in enumerate(cands):
            for c, cont in enumerate(cs):
                cont_BCS[b, c, : len(cont)], cont_lengths_BC[b, c] = cont, len(cont)
        logp_BC = _log_likelihoods(
            model, params, prompt_BP, lengths_B, cont_BCS, cont_lengths_BC, reuse_prefix
        )
        logp_BC = np.asarray(logp_BC, np.float64)
        out += [logp_BC[b, : len(cs)] for b, cs in enumerate(cands)]
    return out


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "eos_id"))
def _greedy(model, params, prompt_BP, lengths_B, max_new_tokens, eos_id):
    step_fn, state = model.start_decoding(
        params, prompt_BP, max_new_tokens, prompt_lengths_B=lengths_B
    )
    return decoding.greedy(
        step_fn, state, bos_id=prompt_BP[:, -1], eos_id=eos_id, max_len=max_new_tokens
    )


def greedy_answers(
    model, params, tokenizer, prompts, until, *, max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Each prompt's greedy continuation (ending at [SEP]), as text cut at the first `until`
    string that follows some text."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        prompt_BP, lengths_B = _left_padded(batch, batch_size)
        tokens_BL = np.asarray(
            _greedy(model, params, prompt_BP, lengths_B, max_new_tokens, tokenizer.sep_id)
        )
        for tokens_L in tokens_BL[: len(batch)]:
            ended = np.flatnonzero(tokens_L == tokenizer.sep_id)
            text = tokenizer.decode(tokens_L[: ended[0] if len(ended) else None].tolist())
            text = text.lstrip()
            for stop in until:
                text = text.split(stop)[0]
            answers.append(text)
    return answers


def evaluate(
    task: Task,
    model,
    params,
    tokenizer,
    *,
    k: int,
    seed: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    reuse_prefix: bool = True,
    context: int | None = None,
) -> dict:
    """The task's metrics with k shots (see the module doc): acc, acc_per_token and
    acc_unconditional for multiple choice, exact_match for free-form; and "shots", the mean
    number of shots that fit `context` tokens (None: the model's max_len; a model trained on
    shorter rows has never seen the positions beyond them)."""
    context = context or model.config.max_len
    prompts, used = [], []
    for i, example in enumerate(task.examples):
        shots = task.shots(i, k, seed)
        if task.multiple_choice:
            reserve = max(len(tokenizer.encode(c)) for c in example.choices)
        else:
            reserve = max_new_tokens
        if reserve >= context:
            raise ValueError(f"task {task.name!r}: example {i}'s answers fill the context")
        prompt = [tokenizer.cls_id, *tokenizer.encode(task.prompt(i, shots))]
        while shots and len(prompt) + reserve > context:
            shots = shots[:-1]
            prompt = [tokenizer.cls_id, *tokenizer.encode(task.prompt(i, shots))]
        prompts.append(prompt[-(context - reserve) :])  # a long query loses its beginning
        used.append(len(shots))
    results = {"k": k, "shots": float(np.mean(used)), "examples": len(task.examples)}
    if not task.multiple_choice:
        answers = greedy_answers(
            model,
            params,
            tokenizer,
            prompts,
            task.until,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        matches = [
            normalize_answer(a) == normalize_answer(e.answer)
            for a, e in zip(answers, task.examples, strict=True)
        ]
        return {**results, "exact_match": float(np.mean(matches))}

    continuations = [[tokenizer.encode(c) for c in e.choices] for e in task.examples]
    score = functools.partial(
        log_likelihoods, model, params, batch_size=batch_size, reuse_prefix=reuse_prefix
    )
    conditional = score(prompts, continuations)
    answer_prompt = [tokenizer.cls_id, *tokenizer.encode(task.answer_context)]
    unconditional = score([answer_prompt] * len(prompts), continuations)
    gold = np.array([e.gold for e in task.examples])

    def accuracy(scores):
        return float(np.mean([np.argmax(s) for s in scores] == gold))

    lengths = [np.array([len(c) for c in cs]) for cs in continuations]
    return {
        **results,
        "acc": accuracy(conditional),
        "acc_per_token": accuracy([s / n for s, n in zip(conditional, lengths, strict=True)]),
        "acc_unconditional": accuracy(
            [s - u for s, u in zip(conditional, unconditional, strict=True)]
        ),
    }
