"""Which sentences go into which ChatTTS call (pure).

Requests (from any number of Triton batches) each hold one or more sentences and one voice.
ChatTTS's ``infer`` takes a list of texts but one speaker, so a call groups sentences of one
voice. Requests still waiting for their first audio go first (a new request does not wait for
the later sentences of older ones), then every other request gets its next sentence, oldest
first; a request that sat out ``MAX_WAIT_CALLS`` calls while it had sentences pending joins the
first group, so nobody's wait is unbounded. Spare slots are then filled with later sentences,
and each request's sentences are always synthesized in order so its chunks can be streamed as
soon as a call returns.
"""

from __future__ import annotations

from dataclasses import dataclass

# Calls a started request may sit out (new requests going first) before it is first in line again.
MAX_WAIT_CALLS = 2


@dataclass(frozen=True)
class Item:
    job: int
    sentence: int


@dataclass(frozen=True)
class Step:
    voice: str
    items: tuple[Item, ...]


@dataclass
class Progress:
    """Where one request stands: sentences planned so far and how many it may add per call."""

    voice: str
    sentences: int
    planned: int = 0
    # 1 sentence in its first call, then 2, 4 ...: the first chunk comes back fast, and long
    # texts still fill the batch once they are streaming.
    allowance: int = 1
    waited: int = 0  # calls in a row this request sat out while it had sentences pending

    @property
    def pending(self) -> bool:
        return self.planned < self.sentences

    @property
    def urgent(self) -> bool:
        return self.planned == 0 or self.waited >= MAX_WAIT_CALLS


def next_step(jobs: list[Progress], max_batch: int) -> Step | None:
    """The next ChatTTS call over ``jobs`` (oldest first); advances their ``planned`` counters."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    pending = [index for index, job in enumerate(jobs) if job.pending]
    if not pending:
        return None
    order = sorted(pending, key=lambda index: (not jobs[index].urgent, index))
    voice = jobs[order[0]].voice
    same_voice = [index for index in order if jobs[index].voice == voice]
    taken = dict.fromkeys(same_voice, 0)
    items: list[Item] = []
    progressed = True
    while progressed and len(items) < max_batch:
        progressed = False
        for index in same_voice:
            job = jobs[index]
            if len(items) < max_batch and job.pending and taken[index] < job.allowance:
                items.append(Item(index, job.planned))
                job.planned += 1
                taken[index] += 1
                progressed = True
    for index in pending:
        job = jobs[index]
        if taken.get(index):
            job.allowance = min(job.allowance * 2, max_batch)
            job.waited = 0
        else:
            job.waited += 1
    return Step(voice, tuple(items))


def plan(voices: list[str], sentence_counts: list[int], max_batch: int) -> list[Step]:
    """All calls for a fixed set of requests (what ``next_step`` does when nothing new arrives)."""
    jobs = [Progress(voice, count) for voice, count in zip(voices, sentence_counts, strict=True)]
    steps: list[Step] = []
    while (step := next_step(jobs, max_batch)) is not None:
        steps.append(step)
    return steps
