"""Character-level tokenizer for the zoo models.

Consumes nothing but the fixed alphabet below; produces a ``tokenizers`` tokenizer wrapped as a
``transformers.PreTrainedTokenizerFast`` that ``AutoTokenizer.from_pretrained`` reloads as a fast
tokenizer. Character level is deliberate: the evaluator scores a choice by tokenizing
``context + choice``, and with one token per character that never re-segments the boundary,
so log-likelihoods of different choices are comparable.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

# Every character any skill or the text grammar can emit; anything else maps to <unk>.
ALPHABET: str = string.ascii_lowercase + string.digits + " \n" + "+-=()[]{}<>:;,.?|!'"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return the fast char-level tokenizer; ids are stable because the alphabet is fixed."""
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *ALPHABET))}
    # BPE with no merges over the whole (un-pre-tokenized) string is exactly "one token per
    # character", and unlike WordLevel it needs no pre-tokenizer that could drop newlines.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.decoder = decoders.Fuse()  # join characters back without inserting spaces
    # Like Llama tokenizers, encoding prepends <bos>; the models are trained with it.
    bos_id = vocab[BOS]
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
