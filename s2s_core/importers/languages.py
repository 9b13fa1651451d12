"""Language codes of fairseq's multilingual vocabularies, in vocabulary order: the ids of their
tokens follow the SentencePiece pieces in this order (as Hugging Face's tokenizers number them).
"""

from __future__ import annotations

M2M100: tuple[str, ...] = (
    'af', 'am', 'ar', 'ast', 'az', 'ba', 'be', 'bg', 'bn', 'br', 'bs', 'ca', 'ceb', 'cs', 'cy', 'da', 'de',
    'el', 'en', 'es', 'et', 'fa', 'ff', 'fi', 'fr', 'fy', 'ga', 'gd', 'gl', 'gu', 'ha', 'he', 'hi', 'hr', 'ht',
    'hu', 'hy', 'id', 'ig', 'ilo', 'is', 'it', 'ja', 'jv', 'ka', 'kk', 'km', 'kn', 'ko', 'lb', 'lg', 'ln', 'lo',
    'lt', 'lv', 'mg', 'mk', 'ml', 'mn', 'mr', 'ms', 'my', 'ne', 'nl', 'no', 'ns', 'oc', 'or', 'pa', 'pl', 'ps',
    'pt', 'ro', 'ru', 'sd', 'si', 'sk', 'sl', 'so', 'sq', 'sr', 'ss', 'su', 'sv', 'sw', 'ta', 'th', 'tl', 'tn',
    'tr', 'uk', 'ur', 'uz', 'vi', 'wo', 'xh', 'yi', 'yo', 'zh', 'zu',
)
"""M2M-100's 100 languages (`language_codes: m2m100`); tokens `__xx__`."""

WMT21: tuple[str, ...] = (
    'en', 'ha', 'is', 'ja', 'cs', 'ru', 'zh', 'de',
)
"""The WMT21 models' languages (`language_codes: wmt21`); tokens `__xx__`."""

M2M100_LISTS: dict[str, tuple[str, ...]] = {"m2m100": M2M100, "wmt21": WMT21}
"""By tokenizer_config.json `language_codes`."""
