"""Static group membership slots and the static leave request (issue 19)."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

from services.group_leave import StaticLeaveRequest, _LeaveGroupRequestV3
from services.membership import Membership, claim_slot
from services.settings import Settings


def test_members_running_at_once_get_different_slots_and_a_dead_ones_slot_is_reused(tmp_path: Path) -> None:
    holder = (
        "import sys; from pathlib import Path; from services.membership import claim_slot; "
        "slot, handle = claim_slot(Path(sys.argv[1]), 'g'); print(slot, flush=True); sys.stdin.read()"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert first.stdout is not None and first.stdout.readline().strip() == b"0"
    slot, handle = claim_slot(tmp_path, "g")
    assert slot == 1  # slot 0 is held by the other process
    handle.close()
    first.kill()  # SIGKILL: the kernel drops the lock with the process
    first.wait()
    slot, handle = claim_slot(tmp_path, "g")
    assert slot == 0
    other_group, other_handle = claim_slot(tmp_path, "h")
    assert other_group == 0
    handle.close()
    other_handle.close()


def test_membership_ids_and_consumer_options(tmp_path: Path) -> None:
    settings = Settings().with_overrides(membership={"session_timeout_s": 12, "heartbeat_s": 1.5})
    one = Membership(settings, "grp", directory=tmp_path)
    two = Membership(settings, "grp", directory=tmp_path)
    try:
        assert one.instance_id is not None and one.instance_id.endswith("-0")
        assert two.instance_id is not None and two.instance_id.endswith("-1")
        assert one.consumer_options() == {
            "group_instance_id": one.instance_id,
            "session_timeout_ms": 12_000,
            "heartbeat_interval_ms": 1_500,
        }
        assert Membership(settings, "grp", configured="slot-a", directory=tmp_path).instance_id == "slot-a"
    finally:
        one.release()
        two.release()
    dynamic = Membership(settings.with_overrides(membership={"static": False}), "grp", directory=tmp_path)
    assert dynamic.instance_id is None
    assert dynamic.consumer_options()["group_instance_id"] is None


def test_the_static_leave_names_the_member_by_instance_id_with_an_unknown_member_id() -> None:
    request = StaticLeaveRequest("grp", ["grp-host-0"]).prepare({13: (0, 5)})
    assert isinstance(request, _LeaveGroupRequestV3)
    encoded = BytesIO(request.encode())
    assert _LeaveGroupRequestV3.SCHEMA.decode(encoded) == ("grp", [("", "grp-host-0")])
