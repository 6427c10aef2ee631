"""Generated token ids -> text deltas, with OpenAI stop strings (pure: no I/O, no torch).

A token's text is not always known when the token is: a multi-byte character may span
tokens (the decoder shows U+FFFD until it is complete), and text that could be the start
of a stop string must not be sent until it is clear it is not one. `TextStream` keeps
the ids, decodes them whole (the tokenizer's spacing rules depend on neighbours) and
releases only text that is final. What it does not do: decide when the model stops
(end-of-sequence and max_tokens are the engine's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
"""Token ids -> text, special tokens skipped (e.g. `tokenizer.decode(ids, skip_special_tokens=True)`)."""

_INCOMPLETE = "\ufffd"


class TextStream:
    """Text of a growing list of generated tokens, released in final pieces."""

    def __init__(self, decode: Decode, stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = tuple(stop)
        self._hold = max((len(s) - 1 for s in self._stop), default=0)
        self.token_ids: list[int] = []
        self.text = ""
        """Everything released so far (the answer, once finished)."""
        self.stopped = False
        """A stop string appeared: the answer ends before it."""

    def add(self, token_id: int) -> str:
        """Adds a token; returns the text it releases ("" while held back)."""
        if self.stopped:
            raise RuntimeError("TextStream.add after a stop string")
        self.token_ids.append(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: releases what was held back (the stop check still applies)."""
        return "" if self.stopped else self._release(final=True)

    def _release(self, final: bool) -> str:
        full = self._decode(self.token_ids)
        if not final and full.endswith(_INCOMPLETE):
            return ""  # half a character: wait for the rest of its bytes
        cut = self._first_stop(full)
        if cut is not None:
            self.stopped = True
            return self._emit(full[:cut])
        if final:
            return self._emit(full)
        # keep back a tail that may still grow into a stop string
        return self._emit(full[: len(full) - self._hold] if self._hold else full)

    def _first_stop(self, full: str) -> int | None:
        # a stop string may straddle released text and new text: search from just before
        start = max(len(self.text) - self._hold, 0)
        hits = [i for i in (full.find(s, start) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _emit(self, upto: str) -> str:
        # Decoding a longer list can rewrite the tail of earlier text (rare merges of
        # spaces or bytes); what was released stays released, only the new suffix goes.
        if len(upto) <= len(self.text):
            return ""
        delta = upto[len(self.text):]
        self.text += delta
        return delta
