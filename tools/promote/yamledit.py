"""Comment-preserving edits of a YAML document in ruamel.yaml's round-trip mode: text loaded so
that dumping it unchanged gives back the same bytes, and entries added, removed or replaced
while the comments around them stay where they were in the file.

Generic YAML surgery: it knows nothing of stack files or promotion and must not raise the
command's errors (ruamel's YAMLError passes through; callers word their own refusals).
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

# Indentation styles tried, in order, until one reproduces the file byte for byte:
# (mapping, sequence, offset).
INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (2, 4, 0), (4, 2, 0))


def _handler(mapping: int, sequence: int, offset: int) -> YAML:
    handler = YAML(typ="rt")
    handler.preserve_quotes = True
    handler.width = 4096  # never fold a long value onto a second line
    handler.indent(mapping=mapping, sequence=sequence, offset=offset)
    return handler


def dump(handler: YAML, data: Any) -> str:
    out = io.StringIO()
    handler.dump(data, out)
    return out.getvalue()


def load_exact(text: str) -> tuple[Any, YAML | None]:
    """The document in `text`, and the handler whose dump of it gives back `text` byte for byte
    (a final newline added), trying the styles of INDENTS in order; None as the handler when
    none does. Raises ruamel's YAMLError for text that is not YAML."""
    expected = text if text.endswith("\n") else text + "\n"
    data: Any = None
    for indent in INDENTS:
        handler = _handler(*indent)
        data = handler.load(text)
        if dump(handler, data) == expected:
            return data, handler
    return data, None


# Comments after an entry's last line are stored on that entry (for a nested block
# collection, on its deepest last entry): an end-of-line comment, then whole comment lines
# that really introduce whatever follows. When entries are added after or removed from the
# end of a block, those lines are moved so they stay where they were in the file.


def _is_block(node: Any) -> bool:
    return isinstance(node, (CommentedMap, CommentedSeq)) and len(node) > 0 and not (
        node.fa.flow_style()
    )


def _last_slot(container: CommentedMap | CommentedSeq, key: Any) -> tuple[Any, Any]:
    """The (collection, key) whose comment is printed after entry `key`'s last line."""
    value = container[key]
    if _is_block(value):
        last = list(value)[-1] if isinstance(value, CommentedMap) else len(value) - 1
        return _last_slot(value, last)
    return container, key


def _token_index(owner: Any) -> int:
    return 2 if isinstance(owner, CommentedMap) else 0


def _get_comment(owner: Any, key: Any) -> CommentToken | None:
    entry = owner.ca.items.get(key)
    token = entry[_token_index(owner)] if entry else None
    return token if isinstance(token, CommentToken) else None


def _set_comment(owner: Any, key: Any, token: CommentToken | None) -> None:
    entry = owner.ca.items.setdefault(key, [None, None, None, None])
    entry[_token_index(owner)] = token


def _take_following_lines(owner: Any, key: Any) -> str:
    """Remove and return the comment lines after entry `key` (its end-of-line part stays)."""
    token = _get_comment(owner, key)
    if token is None:
        return ""
    eol, _, following = token.value.partition("\n")
    if not following:
        return ""
    if eol:
        token.value = eol + "\n"
    else:
        _set_comment(owner, key, None)
    return following


def _give_following_lines(owner: Any, key: Any, lines: str) -> None:
    if not lines:
        return
    token = _get_comment(owner, key)
    if token is not None:
        token.value += lines
    else:
        _set_comment(owner, key, CommentToken("\n" + lines, start_mark=CommentMark(0)))


def append(container: CommentedMap, key: str, value: Any) -> None:
    """Add `key` at the end of a mapping; comments that followed the old end follow the new."""
    lines = ""
    if _is_block(container):
        lines = _take_following_lines(*_last_slot(container, list(container)[-1]))
    container[key] = value
    if lines:
        _give_following_lines(*_last_slot(container, key), lines)


def delete(container: CommentedMap, key: str) -> None:
    """Remove `key`; comment lines that followed it now follow the entry before it."""
    keys = list(container)
    lines = ""
    if _is_block(container):
        lines = _take_following_lines(*_last_slot(container, key))
    del container[key]
    container.ca.items.pop(key, None)
    position = keys.index(key)
    if lines and position > 0:
        _give_following_lines(*_last_slot(container, keys[position - 1]), lines)


def replace_seq(seq: CommentedSeq, values: list[Any]) -> None:
    """Set a sequence's items in place (keeping its style); end-of-line comments stay with
    their values, the lines after the last item stay after the last item."""
    if not _is_block(seq):
        seq[:] = values
        return
    following = _take_following_lines(*_last_slot(seq, len(seq) - 1))
    by_value = {item: _get_comment(seq, i) for i, item in enumerate(seq)}
    seq.ca.items.clear()
    seq[:] = values
    for i, item in enumerate(values):
        if by_value.get(item) is not None:
            _set_comment(seq, i, by_value[item])
    if values and following:
        _give_following_lines(*_last_slot(seq, len(seq) - 1), following)


def flow_seq(values: list[Any]) -> CommentedSeq:
    seq = CommentedSeq(values)
    seq.fa.set_flow_style()
    return seq


def flow_map(**items: Any) -> CommentedMap:
    mapping = CommentedMap(items)
    mapping.fa.set_flow_style()
    return mapping
