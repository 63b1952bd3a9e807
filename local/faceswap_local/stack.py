"""The local stack's AWS side: a moto server on loopback, with the resources of ``template.yaml`` created in it.

Buckets (with versioning and their notifications to SQS), queues (with their redrive policies), the jobs
table (with its stream), the event bus and the secrets are created from the template itself, so local
wiring cannot drift from the deployed wiring. Functions are read from the template too: handler, merged
environment (Globals + function) and event sources, for the local runtime to run.
"""

from __future__ import annotations

import io
import json
import math
import secrets
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from faceswap_local.template import Resolver, load_template

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
ACCESS_KEY_ID = "local"
SECRET_ACCESS_KEY = "local-secret"  # noqa: S105 - moto's throwaway local credentials, not a secret
STACK_NAME = "faceswap-local"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FunctionSpec:
    """A function of the template: ``handler`` ``app.lambda_handler`` in ``code_dir``, its env and events."""

    logical_id: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    events: dict[str, dict[str, Any]]
    timeout: int
    memory_mb: int = 128
    log_format: str | None = None
    application_log_level: str | None = None
    layers: tuple[str, ...] = ("SharedLayer",)
    """Logical ids of its layers, in order: the Globals' then its own (SAM appends lists)."""


@dataclass
class AwsStack:
    """The created resources: physical names by logical id, plus what users and tests need."""

    endpoint_url: str
    refs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[tuple[str, str], Any] = field(default_factory=dict)
    secret_values: dict[str, str] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    default_authorizers: dict[str, str] = field(default_factory=dict)

    def client(self, service: str, *, connections: int = 10) -> Any:
        """A boto3 client for the moto server, keeping up to ``connections`` connections open (botocore's default is
        10; a client shared by more threads than that opens and drops connections all the time)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=BotoConfig(max_pool_connections=connections),
        )


SQS_DURATIONS = {
    "SendMessage": ("DelaySeconds",),
    "ChangeMessageVisibility": ("VisibilityTimeout",),
    "ReceiveMessage": ("VisibilityTimeout",),
}
"""SQS request parameters that are durations (seconds), by operation; batch operations scale their entries'."""


def scaled_seconds(seconds: float, scale: float) -> int:
    """``seconds`` times the local stack's time scale, rounded up (a positive duration stays at least 1 s)."""
    return 0 if seconds <= 0 else max(1, math.ceil(seconds * scale))


class MotoServer:
    """moto in server mode on a free loopback port, serving DynamoDB one request at a time.

    DynamoDB applies a conditional write, check and write together, atomically; moto checks and then writes, so
    two requests on different threads could both pass the same condition. The pipeline's guarantees rest on
    that atomicity (forward-only job states, the call ceilings), so the local stack serves DynamoDB's requests
    in turn, as DynamoDB would apply them.

    With a ``time_scale`` other than 1, every duration in an SQS request (a message's delay, a visibility
    timeout) is multiplied by it, as the local runtime multiplies every other duration of the stack (functions'
    timeouts, queues' visibility timeouts): one clock for the whole local stack, run faster or slower.
    """

    def __init__(self, port: int | None = None, *, time_scale: float = 1.0) -> None:
        self.port = port or free_port()
        self.time_scale = time_scale
        self._dynamodb = threading.Lock()
        self._server = make_server(
            "127.0.0.1",
            self.port,
            self._app(DomainDispatcherApplication(create_backend_app)),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto")

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._thread.join()

    def _app(self, moto: Callable[[dict[str, Any], Callable[..., Any]], Any]) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if target.startswith("AmazonSQS.") and self.time_scale != 1:
                self._scale_sqs_request(environ, target.split(".", 1)[1])
            if not target.startswith("DynamoDB"):
                return moto(environ, start_response)
            with self._dynamodb:
                return list(moto(environ, start_response))  # the whole answer, before the next request starts

        return app

    def _scale_sqs_request(self, environ: dict[str, Any], operation: str) -> None:
        """Scale the durations of an SQS request in the JSON protocol (see the class docstring)."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        entries = body.get("Entries") if operation.endswith("Batch") else [body]
        names = SQS_DURATIONS.get(operation.removesuffix("Batch"), ())
        for entry in entries or []:
            for name in names:
                if isinstance(entry.get(name), int):
                    entry[name] = scaled_seconds(entry[name], self.time_scale)
        data = json.dumps(body).encode("utf-8")
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))


def create_stack(
    template_path: Path,
    endpoint_url: str,
    *,
    parameters: dict[str, str] | None = None,
    stack_name: str = STACK_NAME,
    time_scale: float = 1.0,
) -> AwsStack:
    """Create the template's data resources in the moto server at ``endpoint_url``.

    Parameters
    ----------
    template_path
        ``template.yaml``.
    endpoint_url
        The moto server.
    parameters
        Template parameter overrides (defaults come from the template).
    stack_name
        Prefix of the resource names (unique per stack, so cached secrets never cross stacks).
    time_scale
        Multiplies the queues' durations (visibility timeout, delay), as the runtime does the functions' timeouts.

    Returns
    -------
    AwsStack
        Physical names (``refs``), attributes (ARNs, queue URLs, stream ARN), generated secret values,
        the functions and the template's Outputs as far as they resolve locally.
    """
    template = load_template(template_path)
    stack = AwsStack(endpoint_url=endpoint_url)
    stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack_name}/{uuid.uuid4()}"
    refs: dict[str, Any] = {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT_ID,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": stack_name,
        "AWS::StackId": stack_id,
    }
    for name, spec in template.get("Parameters", {}).items():
        refs[name] = str((parameters or {}).get(name, spec.get("Default", "")))
    resolver = Resolver(refs, stack.attributes, template.get("Mappings", {}))
    resources: dict[str, dict[str, Any]] = template["Resources"]

    sqs, ddb, s3, events, sm = (stack.client(s) for s in ("sqs", "dynamodb", "s3", "events", "secretsmanager"))
    by_type = {
        t: {k: v for k, v in resources.items() if v["Type"] == t} for t in {r["Type"] for r in resources.values()}
    }
    queues = by_type.get("AWS::SQS::Queue", {})
    for logical_id in sorted(queues, key=lambda k: "RedrivePolicy" in queues[k].get("Properties", {})):
        _create_queue(sqs, stack_name, logical_id, queues[logical_id].get("Properties", {}), resolver, time_scale)
    for logical_id, resource in by_type.get("AWS::DynamoDB::Table", {}).items():
        _create_table(ddb, stack_name, logical_id, resource["Properties"], resolver)
    for logical_id, resource in by_type.get("AWS::Events::EventBus", {}).items():
        name = resolver.resolve(resource["Properties"]["Name"])
        arn = events.create_event_bus(Name=name)["EventBusArn"]
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn
    for logical_id, resource in by_type.get("AWS::SecretsManager::Secret", {}).items():
        value = secrets.token_hex(32)
        arn = sm.create_secret(
            Name=f"{stack_name}/{logical_id}",
            SecretString=value,
            Description=resource["Properties"].get("Description", ""),
        )["ARN"]
        resolver.refs[logical_id] = arn
        stack.secret_values[logical_id] = value
    for logical_id, resource in by_type.get("AWS::S3::Bucket", {}).items():
        _create_bucket(s3, logical_id, resource["Properties"], resolver)
    for logical_id, resource in by_type.get("AWS::Events::Rule", {}).items():
        props = resolver.resolve(resource["Properties"])
        name = f"{stack_name}-{logical_id}"
        arn = events.put_rule(
            Name=name,
            EventBusName=props["EventBusName"],
            EventPattern=json.dumps(props["EventPattern"]),
            State="ENABLED",
        )["RuleArn"]
        events.put_targets(
            Rule=name,
            EventBusName=props["EventBusName"],
            Targets=[{"Id": t["Id"], "Arn": t["Arn"]} for t in props.get("Targets", [])],
        )
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn
    cloudwatch = stack.client("cloudwatch")
    for logical_id, resource in by_type.get("AWS::CloudWatch::Alarm", {}).items():
        _create_alarm(cloudwatch, logical_id, resource["Properties"], resolver)
    for logical_id, resource in by_type.get("AWS::Serverless::HttpApi", {}).items():
        resolver.refs[logical_id] = logical_id  # the API id; the gateway serves every HttpApi on one port
        stack.default_authorizers[logical_id] = (
            resource.get("Properties", {}).get("Auth", {}).get("DefaultAuthorizer", "NONE")
        )
    for logical_id in by_type.get("AWS::Serverless::LayerVersion", {}):
        resolver.refs[logical_id] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{logical_id}:1"

    function_globals = template.get("Globals", {}).get("Function", {})
    globals_env = function_globals.get("Environment", {}).get("Variables", {})
    root = template_path.parent
    for logical_id, resource in by_type.get("AWS::Serverless::Function", {}).items():
        props = resource["Properties"]
        env = {**globals_env, **props.get("Environment", {}).get("Variables", {})}
        logging_config = resolver.resolve(
            {**function_globals.get("LoggingConfig", {}), **props.get("LoggingConfig", {})}
        )
        stack.functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=root / props["CodeUri"],
            handler=props["Handler"],
            environment={k: str(resolver.resolve(v)) for k, v in env.items()},
            events={
                name: {"Type": e["Type"], **resolver.resolve(e.get("Properties", {}))}
                for name, e in props.get("Events", {}).items()
            },
            timeout=int(props.get("Timeout", function_globals.get("Timeout", 3))),
            memory_mb=int(props.get("MemorySize", function_globals.get("MemorySize", 128))),
            log_format=logging_config.get("LogFormat"),
            application_log_level=logging_config.get("ApplicationLogLevel"),
            layers=tuple(layer["Ref"] for layer in [*function_globals.get("Layers", []), *props.get("Layers", [])]),
        )
    stack.refs, stack.attributes = resolver.refs, resolver.attributes
    for name, output in template.get("Outputs", {}).items():
        try:
            stack.outputs[name] = resolver.resolve(output["Value"])
        except KeyError:
            continue
    return stack


def _create_queue(
    sqs: Any, stack_name: str, logical_id: str, props: dict[str, Any], resolver: Resolver, time_scale: float
) -> None:
    attributes: dict[str, str] = {}
    for name in ("VisibilityTimeout", "DelaySeconds"):
        if name in props:
            attributes[name] = str(scaled_seconds(int(props[name]), time_scale))
    for name in ("MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds"):
        if name in props:
            attributes[name] = str(props[name])
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(resolver.resolve(props["RedrivePolicy"]))
    url = sqs.create_queue(QueueName=f"{stack_name}-{logical_id}", Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    resolver.refs[logical_id] = url
    resolver.attributes[(logical_id, "Arn")] = arn
    resolver.attributes[(logical_id, "QueueName")] = f"{stack_name}-{logical_id}"
    resolver.attributes[(logical_id, "QueueUrl")] = url


def _create_table(ddb: Any, stack_name: str, logical_id: str, props: dict[str, Any], resolver: Resolver) -> None:
    name = f"{stack_name}-{logical_id}"
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "GlobalSecondaryIndexes" in props:
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if "StreamSpecification" in props:
        args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    table = ddb.create_table(**args)["TableDescription"]
    resolver.refs[logical_id] = name
    resolver.attributes[(logical_id, "Arn")] = table["TableArn"]
    if "LatestStreamArn" in table:
        resolver.attributes[(logical_id, "StreamArn")] = table["LatestStreamArn"]


def _create_bucket(s3: Any, logical_id: str, props: dict[str, Any], resolver: Resolver) -> None:
    name = resolver.resolve(props["BucketName"])
    s3.create_bucket(Bucket=name)
    resolver.refs[logical_id] = name
    resolver.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
    if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    if "BucketEncryption" in props:
        rules = [
            {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    notifications = props.get("NotificationConfiguration", {})
    queue_configs = []
    for config in notifications.get("QueueConfigurations", []):
        config = resolver.resolve(config)
        entry: dict[str, Any] = {"QueueArn": config["Queue"], "Events": [config["Event"]]}
        rules = config.get("Filter", {}).get("S3Key", {}).get("Rules")
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        queue_configs.append(entry)
    if queue_configs:
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"QueueConfigurations": queue_configs}
        )


ALARM_PROPERTIES = (
    "AlarmName",
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "Metrics",
)
"""The alarm properties created locally; actions are left out (there is no SNS topic or e-mail locally)."""


def _create_alarm(cloudwatch: Any, logical_id: str, props: dict[str, Any], resolver: Resolver) -> None:
    args: dict[str, Any] = {}
    for name in ALARM_PROPERTIES:
        if name in props:
            try:
                args[name] = resolver.resolve(props[name])
            except KeyError:
                continue  # refers to a resource the local stack does not create
    for name in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if name in args:
            args[name] = int(args[name])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    cloudwatch.put_metric_alarm(**args)
    resolver.refs[logical_id] = args["AlarmName"]
