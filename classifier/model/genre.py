"""Genres apart from descriptors: the taggers' vocabularies sorted, merged and voted over slices.

The MSD tagger's 50 tags mix genres (rock, House, jazz, ...) with moods, eras and vocals ("sad",
"80s", "female vocalists"). We report genres and descriptors separately. MSD has no `classical` and
no `techno`; the MagnaTagATune tagger (same architecture, same wheel) has both, so `genre` may also
run it and add the genres MSD lacks (see README "Genre" for what that costs). Where both vocabularies
name a genre, the MSD score is kept: its training set is two orders of magnitude larger.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from classifier.model import voting

__all__ = ["GENRES", "merged_vocabulary", "genre_rankings"]

# Tags that name a genre or style; everything else in a vocabulary is a descriptor.
GENRES: dict[str, frozenset[str]] = {
    "msd_musicnn": frozenset({
        "rock", "pop", "alternative", "indie", "electronic", "dance", "alternative rock", "jazz", "metal",
        "chillout", "classic rock", "soul", "indie rock", "electronica", "folk", "punk", "blues", "hard rock",
        "ambient", "experimental", "Hip-Hop", "country", "easy listening", "funk", "electro", "heavy metal",
        "Progressive rock", "rnb", "indie pop", "House", "oldies",
    }),
    "mtt_musicnn": frozenset({
        "classical", "techno", "electronic", "rock", "ambient", "indian", "opera", "pop", "new age", "dance",
        "country", "metal", "choral", "classic",
    }),
}

# MTT's "classic" means classical music; fold it into one label.
_ALIASES = {("mtt_musicnn", "classic"): "classical"}


def merged_vocabulary(models: Sequence[tuple[str, Sequence[str]]]) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """Merge the models' vocabularies.

    Returns (genre_labels, descriptor_labels, columns) where `columns[j] = (model_index, tag_index)`
    says where merged column j (genres first, then descriptors) comes from. A label seen in an earlier
    model is not taken again from a later one.
    """
    genres: list[str] = []
    descriptors: list[str] = []
    g_cols: list[tuple[int, int]] = []
    d_cols: list[tuple[int, int]] = []
    seen: set[str] = set()
    for mi, (name, labels) in enumerate(models):
        genre_set = GENRES.get(name, frozenset())
        for ti, raw in enumerate(labels):
            label = _ALIASES.get((name, raw), raw)
            key = label.lower()
            if key in seen:
                continue
            seen.add(key)
            if raw in genre_set:
                genres.append(label)
                g_cols.append((mi, ti))
            elif mi == 0:  # descriptors only from the primary model: MTT's ones duplicate MSD's in other words
                descriptors.append(label)
                d_cols.append((mi, ti))
    return genres, descriptors, g_cols + d_cols


def genre_rankings(tags: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]], *,
                   k_genres: int = 5, k_descriptors: int = 5) -> tuple[voting.Ranking, voting.Ranking]:
    """Genre and descriptor rankings for one clip (mean probability, votes over slices).

    Parameters
    ----------
    tags : model name -> np.ndarray [shape=(n_slices, n_tags)] sigmoid probabilities, same n_slices
    labels : model name -> that model's tag names
    """
    names = list(tags)
    genres, descriptors, cols = merged_vocabulary([(n, labels[n]) for n in names])
    matrix = np.stack([tags[names[mi]][:, ti] for mi, ti in cols], axis=1) if cols else np.zeros((0, 0))
    g = matrix[:, : len(genres)]
    d = matrix[:, len(genres):]
    return (voting.rank(g, genres, k=k_genres, rule="mean"),
            voting.rank(d, descriptors, k=k_descriptors, rule="mean"))
