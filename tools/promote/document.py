"""The target stack file as an editable document: loaded so that dumping it unchanged gives back
its bytes (yamledit.py), with the `serving` map and the `serving.models` entries the actions
edit.

It must not decide what an edit is (actions.py), validate the result or write the file
(plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from components.config import PROJECT
from tools.promote import yamledit
from tools.promote.errors import HAND_EDITED, Refused, UsageError

SERVING_KEY = f"{PROJECT}:serving"


@dataclass
class StackDocument:
    """A stack file loaded so that dumping it unchanged gives back the same text."""

    path: Path
    text: str
    data: CommentedMap
    handler: YAML

    @classmethod
    def load(cls, path: Path) -> StackDocument:
        if not path.is_file():
            raise UsageError(f"no stack file {path.name} in {path.parent}")
        text = path.read_text(encoding="utf-8")
        try:
            data, handler = yamledit.load_exact(text)
        except YAMLError as exc:
            raise UsageError(f"{path.name} is not valid YAML: {exc}") from None
        if not isinstance(data, CommentedMap) or not isinstance(data.get("config"), CommentedMap):
            raise UsageError(f"{path.name} has no `config:` mapping")
        if handler is None:
            raise UsageError(
                f"{path.name} can't be edited without reformatting lines outside the model "
                "(unusual indentation); indent mappings by 2 or 4 spaces consistently, or edit "
                "it by hand"
            )
        return cls(path, text, data, handler)

    def dump(self) -> str:
        return yamledit.dump(self.handler, self.data)

    @property
    def name(self) -> str:
        return self.path.name

    def serving(self) -> CommentedMap:
        serving = self.data["config"].get(SERVING_KEY)
        if not isinstance(serving, CommentedMap):
            raise UsageError(f"{self.name} has no `{SERVING_KEY}` mapping")
        return serving

    def models(self) -> CommentedMap:
        models = self.serving().get("models")
        if not isinstance(models, CommentedMap):
            raise UsageError(f"{self.name} has no `{SERVING_KEY}.models` mapping")
        return models

    def model(self, name: str) -> CommentedMap:
        models = self.models()
        if name not in models:
            raise UsageError(
                f"{self.name} has no model '{name}'; it has: {', '.join(map(str, models))}"
            )
        entry = models[name]
        if not isinstance(entry, CommentedMap):
            raise Refused([(self.name, name, f"is not a mapping; {HAND_EDITED}")])
        return entry
