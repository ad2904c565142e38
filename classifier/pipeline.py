"""The one readable path: an audio file -> per-slice network outputs -> a Verdict or a GenreReport.

    decode (ffmpeg pipe, chunks) -> slicing (fixed windows) -> features (log-mel patches)
        -> backbone(s) (fixed-size batches) -> per-slice tags and embeddings      analyse() / PatchStream
        -> head -> vote -> Verdict;  taggers -> vote -> GenreReport               verdict() / genre_report()

Long inputs stream through in chunks, so memory stays flat for a 3-hour DJ set: only the per-slice
outputs (a few hundred floats per 3 s) are kept. Everything here is blocking: callers on an event
loop run it in a worker thread.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from classifier import errors
from classifier.audio import decode, features, slicing
from classifier.model import genre, voting
from classifier.model.backbone import Backbone
from classifier.model.heads import Head, features_of
from classifier.model.verdict import GenreReport, TimelinePoint, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from classifier.model.backbone import BackboneParams

__all__ = ["Analysis", "analyse", "Progress", "PatchStream", "finish", "verdict", "genre_report"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""progress(slices_done, slices_expected); slices_expected is 0 when the length is unknown."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """Per-slice outputs for one clip.

    starts_s : np.ndarray [shape=(n,)] slice start, seconds from the start of the *source*
    tags : model name -> np.ndarray [shape=(n, n_tags)] sigmoid probabilities
    embedding : np.ndarray [shape=(n, 200)] the first backbone's `penultimate`
    pooled : np.ndarray [shape=(n, 1506)] the first backbone's pooled features, when asked for
    """

    seconds: float
    offset_s: float
    starts_s: np.ndarray
    tags: dict[str, np.ndarray]
    labels: dict[str, tuple[str, ...]]
    embedding: np.ndarray
    pooled: np.ndarray | None
    rms_dbfs: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.starts_s.shape[0])


def analyse(path: Path, backbones: Sequence[Backbone], *, hop_s: float = 3.0, batch_size: int = 32,
            start_s: float = 0.0, duration_s: float | None = None, offset_s: float | None = None,
            max_seconds: float = 4 * 3600.0,
            min_seconds: float = 3.0, silence_dbfs: float = -60.0, decode_timeout_s: float = 300.0,
            keep_pooled: bool = False, progress: Progress | None = None) -> Analysis:
    """Decode, slice, featurise and score one file.

    Parameters
    ----------
    path : any audio/video file ffmpeg reads
    backbones : networks to run; the first gives the embedding. All must share DSP params.
    hop_s : hop between windows in seconds (window = one 2.976-s patch)
    start_s, duration_s : analyse only this part of the file
    offset_s : where the file's `start_s` lies in the user's source (default: start_s); for a fetched
        window, the window's position in the whole track, so slice times refer to the track
    max_seconds, min_seconds : refuse longer / shorter audio (AudioTooLong / TooShort)
    silence_dbfs : refuse audio quieter than this overall (Silent)
    progress : called after each batch with (slices done, slices expected)

    Raises
    ------
    MissingFile, Undecodable, AudioTooLong, TooShort, Silent
    """
    if not backbones:
        raise ValueError("need at least one backbone")
    params = backbones[0].params
    for bb in backbones[1:]:
        if (bb.params.sample_rate, bb.params.n_fft, bb.params.hop_length, bb.params.n_mels) != \
                (params.sample_rate, params.n_fft, params.hop_length, params.n_mels):
            raise ValueError(f"{bb.name} does not share {backbones[0].name}'s DSP parameters")
    t_total = time.perf_counter()
    stream = PatchStream(path, params, hop_s=hop_s, max_windows=batch_size * 4, start_s=start_s,
                         duration_s=duration_s, max_seconds=max_seconds, decode_timeout_s=decode_timeout_s)
    starts: list[np.ndarray] = []
    outs: dict[str, list[np.ndarray]] = {bb.name: [] for bb in backbones}
    embeds: list[np.ndarray] = []
    pooled: list[np.ndarray] = []
    network = 0.0
    done = 0
    for win_starts, x in stream:
        t1 = time.perf_counter()
        for i, bb in enumerate(backbones):
            out = bb.predict(x, batch_size=batch_size)
            outs[bb.name].append(out.tags)
            if i == 0:
                embeds.append(out.embedding)
                if keep_pooled:
                    pooled.append(out.pooled)
        network += time.perf_counter() - t1
        starts.append(win_starts)
        done += len(win_starts)
        if progress is not None:
            progress(done, max(stream.expected, done))
    timings = {"decode": stream.decode_s, "features": stream.features_s, "network": network}
    return finish(stream, starts, outs, {bb.name: bb.labels for bb in backbones}, embeds,
                  pooled if keep_pooled else None, timings, t_total, start_s=start_s, offset_s=offset_s,
                  min_seconds=min_seconds, silence_dbfs=silence_dbfs, path=path)


class PatchStream:
    """Iterate (starts, patches) batches of one file: decode -> windows -> log-mel, streamed.

    Yields ``(starts, patches)`` with starts : np.ndarray [shape=(n,), int64] sample offsets from
    `start_s`, and patches : np.ndarray [shape=(n, patch_frames, n_mels), float32]. Afterwards
    `n_samples`, `sumsq`, `decode_s`, `features_s` describe what was read. Separate from the network
    so the service can batch patches from many requests into one network call.
    """

    def __init__(self, path: Path, params: "BackboneParams", *, hop_s: float = 3.0, max_windows: int = 128,
                 start_s: float = 0.0, duration_s: float | None = None, max_seconds: float = 4 * 3600.0,
                 decode_timeout_s: float = 300.0) -> None:
        self.path, self.params = Path(path), params
        self.sr = params.sample_rate
        self.window = (params.patch_frames - 1) * params.hop_length
        self.hop = max(1, int(round(hop_s * self.sr)))
        self.max_windows = max_windows
        self.start_s, self.duration_s = start_s, duration_s
        self.max_seconds, self.decode_timeout_s = max_seconds, decode_timeout_s
        self.n_samples = 0
        self.sumsq = 0.0
        self.decode_s = 0.0
        self.features_s = 0.0
        self.expected = 0
        probed = decode.probe_duration(self.path)
        if probed is not None:
            avail = max(0.0, probed - start_s)
            secs = avail if duration_s is None else min(duration_s, avail)
            self.expected = len(slicing.window_starts(int(secs * self.sr), self.window, self.hop))

    def _chunks(self) -> Iterator[np.ndarray]:
        it = decode.stream(self.path, self.sr, start_s=self.start_s, duration_s=self.duration_s,
                           max_seconds=self.max_seconds, timeout_s=self.decode_timeout_s)
        while True:
            t0 = time.perf_counter()
            chunk = next(it, None)
            self.decode_s += time.perf_counter() - t0
            if chunk is None:
                return
            self.n_samples += chunk.shape[0]
            c64 = chunk.astype(np.float64)
            self.sumsq += float(np.dot(c64, c64))
            yield chunk

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for win in slicing.stream_windows(self._chunks(), self.window, self.hop, max_windows=self.max_windows):
            t0 = time.perf_counter()
            x = features.patches(win.samples, self.params)
            self.features_s += time.perf_counter() - t0
            yield win.starts, x


def finish(stream: PatchStream, starts: list[np.ndarray], outs: dict[str, list[np.ndarray]],
           labels: dict[str, tuple[str, ...]], embeds: list[np.ndarray], pooled: list[np.ndarray] | None,
           timings: dict[str, float], t_total: float, *, start_s: float, offset_s: float | None,
           min_seconds: float, silence_dbfs: float, path: Path) -> Analysis:
    """Check length and loudness, then assemble the per-slice outputs into an Analysis."""
    sr = stream.sr
    n_samples, sumsq = stream.n_samples, stream.sumsq
    done = int(sum(len(s) for s in starts))
    seconds = n_samples / sr
    if seconds < min_seconds or done == 0:
        raise errors.TooShort(
            f"That clip is {seconds:.1f} s long: send me at least {math.ceil(min_seconds)} seconds of music.")
    rms = math.sqrt(sumsq / max(1, n_samples))
    rms_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    if rms_dbfs < silence_dbfs:
        raise errors.Silent(detail=f"rms {rms_dbfs:.1f} dBFS")

    timings = dict(timings, total=time.perf_counter() - t_total)
    offset = start_s if offset_s is None else offset_s
    all_starts = np.concatenate(starts).astype(np.float64) / sr + offset
    analysis = Analysis(
        seconds=seconds, offset_s=offset, starts_s=all_starts,
        tags={name: np.concatenate(v) for name, v in outs.items()},
        labels=labels,
        embedding=np.concatenate(embeds), pooled=np.concatenate(pooled) if pooled is not None else None,
        rms_dbfs=rms_dbfs, timings={k: round(v, 4) for k, v in timings.items()},
    )
    log.debug("analysed %s: %.1f s, %d slices, %s", Path(path).name, seconds, analysis.n_slices, analysis.timings)
    return analysis


def verdict(head: Head, a: Analysis, display: str, hint: str | None = None, *, k: int = 5) -> Verdict:
    """Vote the per-slice artist probabilities of an analysis into a Verdict."""
    t0 = time.perf_counter()
    probs = head.predict(features_of(head.config.feature, a.embedding, a.pooled))
    r = voting.rank(probs, head.labels, k=k, rule=head.config.rule)  # type: ignore[arg-type]
    confidence = r.candidates[0].score if r.candidates else 0.0
    g, _ = genre.genre_rankings({head.backbone: a.tags[head.backbone]}, {head.backbone: a.labels[head.backbone]},
                                k_genres=3)
    timings = dict(a.timings)
    timings["head"] = round(time.perf_counter() - t0, 4)
    return Verdict(
        source=display, seconds=a.seconds, slices=a.n_slices, artists=r.candidates, confidence=confidence,
        verdict="identified" if confidence >= head.threshold and r.candidates else "unknown",
        genres=g.candidates, model_id=head.id, model_artists=len(head.labels), timings=timings,
        vote_share=r.vote_share, start=a.offset_s, hint=hint,
        timeline=tuple(TimelinePoint(float(t), head.labels[w]) for t, w in zip(a.starts_s, r.winners)),
    )


def genre_report(a: Analysis, display: str, hint: str | None = None) -> GenreReport:
    """Rank the taggers' genres and descriptors over an analysis' slices into a GenreReport."""
    t0 = time.perf_counter()
    g, d = genre.genre_rankings(a.tags, a.labels)
    timings = dict(a.timings)
    timings["vote"] = round(time.perf_counter() - t0, 4)
    merged, _, _ = genre.merged_vocabulary([(n, a.labels[n]) for n in a.tags])
    timeline = tuple(TimelinePoint(float(t), merged[w]) for t, w in zip(a.starts_s, g.winners))
    return GenreReport(source=display, seconds=a.seconds, slices=a.n_slices, genres=g.candidates,
                       descriptors=d.candidates, timings=timings, start=a.offset_s, hint=hint, timeline=timeline)
