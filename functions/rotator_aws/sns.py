"""AlertPort over SNS: the same message the state machine's "Send failure alert" state publishes."""

from __future__ import annotations

import json
from typing import Any

from rotator_aws.errors import aws_call
from rotator_core.models import Alert


class SnsAlerts:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn

    def publish(self, alert: Alert) -> None:
        with aws_call("Publish"):
            self._client.publish(
                TopicArn=self._topic_arn,
                Subject=alert.subject,
                Message=json.dumps(alert.dump(), separators=(",", ":")),
                MessageAttributes={
                    "step": {"DataType": "String", "StringValue": alert.step.value},
                    "errorType": {"DataType": "String", "StringValue": alert.error_type},
                },
            )
