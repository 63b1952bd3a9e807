"""Writes each function's IAM statements from ``template.yaml`` as JSON, SAM policy templates expanded.

It runs in the SAM CLI's environment, whose ``samtranslator`` pins clash with the development environment's;
``make integration`` writes ``.local/sam-policies.json`` with it for ``iam.py``::

    .venv-sam/bin/python tests/integration/sam_policies.py template.yaml > .local/sam-policies.json

Output: ``{"<function logical id>": [<IAM statement with intrinsics unresolved>, ...], ...}``. Managed policies
named by string are left out (the template names none).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samtranslator.policy_template_processor.processor import PolicyTemplatesProcessor
from samtranslator.yaml_helper import yaml_parse


def function_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every ``AWS::Serverless::Function``'s ``Policies`` as a list of IAM statements."""
    processor = PolicyTemplatesProcessor(PolicyTemplatesProcessor.get_default_policy_templates_json())
    functions: dict[str, list[dict[str, Any]]] = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        statements: list[dict[str, Any]] = []
        for policy in resource.get("Properties", {}).get("Policies", []):
            if not isinstance(policy, dict):
                continue
            ((name, value),) = policy.items()
            document = {name: value} if name == "Statement" else processor.convert(name, value)
            found = document["Statement"]
            statements.extend(found if isinstance(found, list) else [found])
        functions[logical_id] = statements
    return functions


if __name__ == "__main__":
    json.dump(function_statements(yaml_parse(Path(sys.argv[1]).read_text(encoding="utf-8"))), sys.stdout, indent=1)
