"""Reading ``template.yaml`` for the local stack: CloudFormation YAML tags and the intrinsics it uses.

Only what the template needs is resolved: ``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::Select``,
``Fn::Split`` and ``Fn::FindInMap``, with parameters, pseudo parameters and the attributes of resources created so far.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads ``!Ref x`` as ``{"Ref": x}`` and ``!Sub …`` as ``{"Fn::Sub": …}``."""


def _tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation YAML template into plain data."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


class Resolver:
    """Resolves intrinsic functions against known values.

    Parameters
    ----------
    refs
        ``Ref`` values: parameters, pseudo parameters (``AWS::Region`` …) and created resources.
    attributes
        ``Fn::GetAtt`` values by ``(logical id, attribute)``.
    mappings
        The template's ``Mappings`` (for ``Fn::FindInMap``).
    """

    def __init__(
        self,
        refs: Mapping[str, Any],
        attributes: Mapping[tuple[str, str], Any],
        mappings: Mapping[str, Any] | None = None,
    ) -> None:
        self.refs = dict(refs)
        self.attributes = dict(attributes)
        self.mappings = dict(mappings or {})

    def resolve(self, value: Any) -> Any:
        """Return ``value`` with every intrinsic function replaced by its value; ``KeyError`` if unknown."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, argument),) = value.items()
            if name == "Ref":
                return self.refs[argument]
            if name == "Fn::GetAtt":
                logical_id, attribute = argument
                return self.attributes[(logical_id, attribute)]
            if name == "Fn::Join":
                separator, items = argument
                return separator.join(str(v) for v in self.resolve(items))
            if name == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if name == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if name == "Fn::Sub":
                return self._sub(argument)
            if name == "Fn::FindInMap":
                mapping, top, second = (self.resolve(v) for v in argument)
                return self.mappings[mapping][top][second]
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument
            local = {k: self.resolve(v) for k, v in variables.items()}
        else:
            text, local = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in local:
                return str(local[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return str(self.attributes[(logical_id, attribute)])
            return str(self.refs[name])

        return re.sub(r"\$\{([^}!]+)\}", replace, text)
