"""The handlers' wiring: environment variables parsed into models, and the boto3 adapters' requests."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from handlers.common import FunctionEnvironment, environment
from handlers.rotation import RotationEnvironment
from rotator_aws.secrets_manager import SecretsManagerStore
from rotator_core.errors import ConfigurationError, SecretNotFound
from rotator_core.models import PasswordPolicy

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rotator/app-AbCdEf"


def test_password_knobs_are_read_from_aws_variable_names_and_sent_as_the_api_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the variables AWS's official rotation functions read
    monkeypatch.setenv("PASSWORD_LENGTH", "48")
    monkeypatch.setenv("EXCLUDE_PUNCTUATION", "true")
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "xyz")
    # When they are parsed
    policy = environment(PasswordPolicy)
    # Then the policy is the GetRandomPassword request itself
    assert policy.request() == {
        "PasswordLength": 48,
        "ExcludeCharacters": "xyz",
        "ExcludeNumbers": False,
        "ExcludePunctuation": True,
        "ExcludeUppercase": False,
        "ExcludeLowercase": False,
        "RequireEachIncludedType": True,
    }


@pytest.mark.parametrize(
    ("variable", "value", "model"),
    [
        ("DB_CONNECT_TIMEOUT_SECONDS", "soon", FunctionEnvironment),
        ("PASSWORD_LENGTH", "4", PasswordPolicy),
        ("STATE_MACHINE_ARN", "", RotationEnvironment),
    ],
)
def test_a_bad_environment_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, model: type[FunctionEnvironment | PasswordPolicy]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        environment(model)


def test_the_ssl_root_certificate_comes_from_the_environment_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_SSL_ROOT_CERT", "/opt/rds-ca.pem")
    assert environment(FunctionEnvironment).db_ssl_root_cert == "/opt/rds-ca.pem"


@pytest.fixture
def stubbed() -> tuple[SecretsManagerStore, Stubber]:
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return SecretsManagerStore(client), Stubber(client)


def test_random_password_sends_the_policy_as_get_random_password_parameters(
    stubbed: tuple[SecretsManagerStore, Stubber],
) -> None:
    store, stub = stubbed
    policy = PasswordPolicy(length=40, exclude_characters="/@")
    stub.add_response("get_random_password", {"RandomPassword": "p" * 40}, policy.request())
    with stub:
        assert store.random_password(policy).get_secret_value() == "p" * 40


def test_a_missing_stage_is_no_version_but_a_missing_secret_is_secret_not_found(
    stubbed: tuple[SecretsManagerStore, Stubber],
) -> None:
    store, stub = stubbed
    # Given a secret that exists but has no AWSPENDING version
    stub.add_client_error("get_secret_value", "ResourceNotFoundException")
    stub.add_response("describe_secret", {"ARN": ARN, "Name": "rotator/app"})
    # And an id that names no secret at all
    stub.add_client_error("get_secret_value", "ResourceNotFoundException")
    stub.add_client_error("describe_secret", "ResourceNotFoundException")
    with stub:
        assert store.get_version(ARN, stage="AWSPENDING") is None
        with pytest.raises(SecretNotFound, match="secret rotator/typo not found"):
            store.get_version("rotator/typo", stage="AWSCURRENT")


def test_the_fault_seam_fires_once_at_its_point_and_step_and_knows_every_checkpoint() -> None:
    from handlers.tasks import Faults
    from rotator_core.models import RotationStep

    faults = Faults()
    fired: list[str] = []
    faults.arm("set_password.after_write", lambda: fired.append("x"), step=RotationStep.SET)
    faults("set_password.after_write", RotationStep.TEST)  # another step: nothing
    faults("set_password.after_write", RotationStep.SET)
    faults("set_password.after_write", RotationStep.SET)  # once only
    assert fired == ["x"]
    faults.arm("promote.before_move", RuntimeError("died"), times=2)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="died"):
            faults("promote.before_move", RotationStep.FINISH)
    faults("promote.before_move", RotationStep.FINISH)
    with pytest.raises(ValueError, match="no checkpoint"):
        faults.arm("no.such.point", RuntimeError())
