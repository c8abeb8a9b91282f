"""Visual words: hierarchical k-means vocabularies of feature vectors (VideoBERT, Sun et al. 2019).

    from videobert_cli.vocab import build_vocabulary, save_vocab, load_vocab, assign_words

    vocab = build_vocabulary(["features/"], levels=4, clusters=12, seed=0)
    save_vocab(vocab, "vocab.h5")
    ids, paths = assign_words(load("features/clip.h5").video.features, load_vocab("vocab.h5"))

See ``docs/vocab.md`` for the algorithm and the file layout.
"""

from videobert_cli.vocab.files import assign_file, load_vocab, save_vocab, word_attrs, write_words
from videobert_cli.vocab.kmeans import kmeans_plusplus, minibatch_kmeans
from videobert_cli.vocab.vocab import (
    FORMAT_NAME,
    GROUP_DATASETS,
    Vocabulary,
    assign_words,
    build_vocabulary,
    check_compatible,
    feature_files,
    file_identity,
    usage_stats,
)

__all__ = [
    "FORMAT_NAME",
    "GROUP_DATASETS",
    "Vocabulary",
    "assign_file",
    "assign_words",
    "build_vocabulary",
    "check_compatible",
    "feature_files",
    "file_identity",
    "load_vocab",
    "save_vocab",
    "usage_stats",
    "word_attrs",
    "write_words",
    "kmeans_plusplus",
    "minibatch_kmeans",
]
