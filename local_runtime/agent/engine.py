"""The generation engine: one dedicated thread owns mlx (model, KV caches, mlx-lm's BatchGenerator).

mlx arrays must stay on one thread, so everything that touches them runs here; the web side talks to it
through a command queue and receives events through per-request callbacks. Requests that arrive while
others decode are inserted into the running batch (continuous batching): one forward pass per step
serves every active sequence.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isthmus_contracts.internal import FinishReason
from local_runtime.agent.jobs import Job
from local_runtime.agent.load_progress import LoadProgress, materialize
from local_runtime.agent.prompt_cache import CacheEntry, SessionPrefixCache, reusable_prefix
from local_runtime.agent.sharded_engine import ShardedEngine
from local_runtime.agent.solo import SoloSequence

if TYPE_CHECKING:
    from isthmus_contracts.agent import ShardSpec

log = logging.getLogger("isthmus.agent.engine")


class QueueFull(Exception):
    pass


class NoModelLoaded(Exception):
    pass


class AgentRestarting(RuntimeError):
    """This process's distributed group has ended; it restarts (see cli.run_agent) before it loads again."""


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: Any
    tokenizer: Any  # mlx-lm TokenizerWrapper
    context_length: int | None = None
    embedding: Any = None  # an EmbeddingModel when the model embeds (it then serves /embeddings, not chat)


@dataclass
class EngineConfig:
    max_batch: int = 8
    max_queue: int = 16
    cache_bytes: int = 2 << 30
    cache_ttl_s: float = 1800.0
    loop_guard: bool = True


class Engine(ShardedEngine):
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.loaded: LoadedModel | None = None
        self.cache = SessionPrefixCache(config.cache_bytes, config.cache_ttl_s)
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._waiting: deque[Job] = deque()
        self._active: dict[int, Job] = {}  # sequences inside mlx-lm's BatchGenerator, by uid
        self._solo: tuple[Job, SoloSequence] | None = None  # a lone sequence on the fast path
        self._solo_ok = False  # the model's cache can be trimmed, so a solo sequence can migrate
        self._lock = threading.Lock()  # guards _waiting between submit() and the engine thread
        self._generator: Any = None
        self._head: Any = None  # rank 0 of a sharded group: a ShardedHead (the model the generators run)
        self.shard: dict[str, Any] | None = None  # this agent's part in a sharded group, for the status
        self.shard_error: str | None = None
        # mlx keeps one distributed group per process for the process's life: once this process's group has
        # ended, the agent restarts itself (a fresh process) before it can join another (see cli.run_agent)
        self.restart_due = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)
        self._thread.start()

    # ---- called from any thread ------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._active) + (self._solo is not None)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return bool(self.active or self._waiting)

    def submit(self, job: Job) -> None:
        with self._lock:
            # Free slots admit at once; beyond them at most max_queue requests wait.
            pending = len(self._waiting) + self.active
            if pending >= self.config.max_batch + self.config.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests queued (max {self.config.max_queue})")
            self._waiting.append(job)
        self._commands.put(lambda: None)  # wake the loop

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        self._commands.put(lambda: None)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the engine thread (for anything that touches mlx)."""
        future: Future[Any] = Future()

        def command() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._commands.put(command)
        return future

    def load(self, name: str, path: Path, shard: ShardSpec | None = None,
             progress: LoadProgress | None = None) -> Future[Any]:
        return self.call(lambda: self._load(name, path, shard, progress or LoadProgress(name)))

    def unload(self) -> Future[Any]:
        return self.call(self._unload)

    def shutdown(self) -> None:
        self._stop.set()
        self._commands.put(lambda: None)
        self._thread.join(timeout=10)

    # ---- engine thread -----------------------------------------------------------------------------

    def _load(self, name: str, path: Path, shard: ShardSpec | None = None,
              progress: LoadProgress | None = None) -> LoadedModel | None:
        from mlx_lm import load

        from local_runtime.agent.embeddings.encoder import EmbeddingModel, is_embedding_dir

        self._unload()
        if self.restart_due:  # that unload ended this process's group: a model loaded now would not survive
            raise AgentRestarting("this agent left its distributed group and restarts now; load again shortly")
        self.shard_error = None
        if is_embedding_dir(path):
            if shard is not None:
                raise ValueError("an embedding model cannot be sharded: it fits one node")
            encoder = EmbeddingModel.load(path)
            self.loaded = LoadedModel(name=name, path=path, model=encoder.model, tokenizer=None,
                                      context_length=encoder.recipe.max_tokens, embedding=encoder)
            log.info("loaded embedding model %s from %s", name, path)
            return self.loaded
        if shard is not None:
            return self._load_shard(name, path, shard)
        # Lazily mapped, then materialized layer by layer, so a load reports how far it got.
        loaded: Any = load(str(path), lazy=True)
        model, tokenizer = loaded[0], loaded[1]
        materialize(model, progress or LoadProgress(name))
        self.loaded = self._loaded_model(name, path, model, tokenizer)
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache

        self._solo_ok = can_trim_prompt_cache(make_prompt_cache(model))
        self._generator = self._new_generator()
        log.info("loaded %s from %s", name, path)
        return self.loaded

    def _loaded_model(self, name: str, path: Path, model: Any, tokenizer: Any) -> LoadedModel:
        return LoadedModel(name=name, path=path, model=model, tokenizer=tokenizer, context_length=_context_length(path))

    def _new_generator(self) -> Any:
        from mlx_lm.generate import BatchGenerator

        assert self.loaded is not None
        eos = sorted(self.loaded.tokenizer.eos_token_ids)
        if self._head is not None:  # sharded: every cache change goes through the head, so the followers follow
            from local_runtime.agent.sharded_batch import ShardedBatchGenerator

            return ShardedBatchGenerator(self._head, stop_tokens=set(eos), prefill_step_size=512)
        return BatchGenerator(self.loaded.model, stop_tokens=[[t] for t in eos],
                              completion_batch_size=self.config.max_batch,
                              prefill_batch_size=self.config.max_batch, prefill_step_size=512)

    def _unload(self) -> None:
        if self._head is not None:
            self._head.stop_followers()
            self._head = None
            self.restart_due = True
        self.shard = None
        self.loaded = None  # first, so failing the running sequences builds no new generator
        self._fail_all("model unloaded", 503)
        self.cache.clear()
        self._generator = None
        import gc

        import mlx.core as mx

        gc.collect()
        mx.clear_cache()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                idle = not self.busy
                command = self._commands.get(timeout=1.0) if idle else self._commands.get_nowait()
                command()
                while True:  # drain everything queued, then step once
                    self._commands.get_nowait()()
            except queue.Empty:
                pass
            try:
                self._reap_cancelled()
                self._admit()
                if self._solo is not None:
                    self._step_solo()
                if self._active:
                    self._step()
            except Exception as exc:  # one bad step must not kill the node: fail its sequences, go on
                if self._head is not None:
                    self._shard_lost(exc)
                    continue
                log.exception("engine step failed")
                self._fail_all(f"engine error: {exc}", 500)  # also replaces the generator

    def _admit(self) -> None:
        if self._solo is not None and self._waiting:
            self._migrate_solo()  # company arrived: the lone sequence joins the batch
        while self._waiting and self.active < self.config.max_batch:
            with self._lock:
                job = self._waiting.popleft()
            if job.cancelled:
                job.emit(None)
                continue
            try:
                self._insert(job, solo=self._solo_ok and not self.active and not self._waiting)
            except Exception as exc:
                log.exception("could not start %s", job.id)
                job.fail(str(exc), 500)

    def _insert(self, job: Job, *, solo: bool) -> None:
        import mlx.core as mx
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
        from mlx_lm.sample_utils import make_sampler

        loaded = self.loaded
        if loaded is None or loaded.name != job.model_name:
            job.fail("the model was unloaded", 503, code="model_not_loaded")
            return
        prompt = job.prompt.tokens
        cache, cached_tokens, reused = None, None, 0
        if job.session_id:
            cached_tokens = 0
            entry = self.cache.take(job.session_id)
            if entry is not None:
                reused = reusable_prefix(entry, prompt, can_trim=can_trim_prompt_cache(entry.cache))
                if reused:
                    if len(entry.tokens) > reused:
                        trim_prompt_cache(entry.cache, len(entry.tokens) - reused)
                    cache, cached_tokens = entry.cache, reused
        sampling = job.request.sampling
        sampler = None
        if sampling.temperature:
            sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p or 0.0,
                                   min_p=sampling.min_p or 0.0, top_k=sampling.top_k or 0)
        if sampling.seed is not None:
            mx.random.seed(sampling.seed)
        job.start(loaded.tokenizer.detokenizer, cached_tokens)
        if solo:
            solo_cache = cache if cache is not None else make_prompt_cache(loaded.model)
            self._solo = (job, SoloSequence(
                loaded.model, prompt[reused:], solo_cache, list(prompt[:reused]), max_tokens=job.max_tokens,
                sampler=sampler, eos_ids=set(loaded.tokenizer.eos_token_ids)))
            return
        (uid,) = self._generator.insert(
            [prompt[reused:]], max_tokens=[job.max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[list(prompt[:reused])],
            samplers=[sampler],
        )
        job.uid = uid
        self._active[uid] = job

    def _migrate_solo(self) -> None:
        assert self._solo is not None
        job, seq = self._solo
        self._solo = None
        cache, tokens, last, left = seq.migrate()
        (uid,) = self._generator.insert([[last]], max_tokens=[left], caches=[cache], all_tokens=[tokens],
                                        samplers=[seq.sampler])
        job.uid = uid
        self._active[uid] = job

    def _step_solo(self) -> None:
        assert self._solo is not None
        job, seq = self._solo
        token, finish = seq.next()
        looped = job.on_token(token, is_eos=finish == "stop")
        reason = self._finish_reason(job, looped, finish)
        if reason is not None:
            self._solo = None
            cache, tokens = seq.finished_cache()
            self._store(job, cache, tokens)
            job.finish(reason, loop_guard=looped and reason == "stop")

    @staticmethod
    def _finish_reason(job: Job, looped: bool, finish: str | None) -> FinishReason | None:
        if job.stop_matched:
            return "stop_sequence"
        if job.forced_call_done:
            return "tool_calls"
        if looped:
            return "stop"
        if finish == "stop":
            return "stop"
        if finish == "length":
            return "length"
        return None

    def _step(self) -> None:
        _, responses = self._generator.next()
        if self._head is not None and self.shard is not None:
            self.shard["batch_rows_peak"] = self._head.rows_peak
        for r in responses:
            job = self._active.get(r.uid)
            if job is None:
                continue
            looped = job.on_token(r.token, is_eos=r.finish_reason == "stop")
            reason = self._finish_reason(job, looped, r.finish_reason)
            if reason is None:
                continue
            if r.finish_reason is None:  # we stopped it: take it out of the batch
                extracted = self._generator.remove([r.uid], return_prompt_caches=True)
                cache, tokens = extracted.get(r.uid, (None, None))
            else:
                cache, tokens = r.prompt_cache, r.all_tokens
            del self._active[r.uid]
            self._store(job, cache, tokens)
            job.finish(reason, loop_guard=looped and reason == "stop")

    def _store(self, job: Job, cache: Any, tokens: list[int] | None) -> None:
        if not job.session_id or cache is None or tokens is None:
            return
        if not cache or getattr(cache[0], "offset", len(tokens)) != len(tokens):
            return  # cache and token list disagree: never reuse something we cannot trust
        nbytes = sum(c.nbytes for c in cache)
        self.cache.put(job.session_id, CacheEntry(tokens=list(tokens), cache=cache, nbytes=nbytes,
                                                  prompt_tokens=len(job.prompt.tokens)))

    def _reap_cancelled(self) -> None:
        if self._solo is not None and self._solo[0].cancelled:
            job, seq = self._solo
            self._solo = None
            seq.finished_cache()
            job.done = True
            job.emit(None)
            log.info("cancelled %s after %d tokens", job.id, job.completion_tokens)
        gone = [uid for uid, job in self._active.items() if job.cancelled]
        if gone:
            self._generator.remove(gone)
            for uid in gone:
                job = self._active.pop(uid)
                job.done = True
                job.emit(None)
                log.info("cancelled %s after %d tokens", job.id, job.completion_tokens)

    def _fail_all(self, message: str, status: int, code: str = "backend_error") -> None:
        jobs = list(self._active.values())
        if self._solo is not None:
            jobs.append(self._solo[0])
            self._solo = None
        with self._lock:
            jobs += list(self._waiting)
            self._waiting.clear()
        self._active.clear()
        # The old generator may hold half-finished state: start from a clean one.
        self._generator = self._new_generator() if self.loaded and self.loaded.embedding is None else None
        for job in jobs:
            job.fail(message, status, code=code)


def _context_length(path: Path) -> int | None:
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    text_config = config.get("text_config") or {}
    value = config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
    return int(value) if value else None
