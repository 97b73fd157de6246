"""Drives a warden daemon with stubs generated from metald's own vmprovisioner.v1 definition.

Run by tests/metald_client.rs, which generates `vmprovisioner/v1/vm_pb2.py` and `vm_pb2_grpc.py`
with grpcio-tools into a temporary directory on PYTHONPATH. Nothing here knows warden's .proto:
every message is metald's, so a field or number that differs between the two shows up as a wrong
value or a failed call.

Usage: lifecycle.py HOST:PORT KERNEL_PATH ID_PREFIX
Prints one line per step; exits non-zero (with a traceback) at the first failed check.
"""

import json
import sys
import urllib.error
import urllib.request

import grpc
from google.protobuf import json_format

from vmprovisioner.v1 import vm_pb2 as pb
from vmprovisioner.v1 import vm_pb2_grpc as pb_grpc

ADDR, KERNEL, PREFIX = sys.argv[1], sys.argv[2], sys.argv[3]
MIB = 1 << 20


def step(msg):
    print(msg, flush=True)


def config(args="mode=idle"):
    return pb.VmConfig(
        cpu=pb.CpuConfig(vcpu_count=1),
        memory=pb.MemoryConfig(size_bytes=128 * MIB),
        boot=pb.BootConfig(kernel_path=KERNEL, kernel_args=args),
        console=pb.ConsoleConfig(enabled=True),
        metadata={"team": "payments"},
    )


def expect_code(code, call, *args, contains=None):
    try:
        call(*args)
    except grpc.RpcError as e:
        assert e.code() == code, f"{e.code()} (wanted {code}): {e.details()}"
        if contains is not None:
            assert contains in e.details(), f"{e.details()!r} does not name {contains!r}"
        return e.details()
    raise AssertionError(f"{call} succeeded; wanted {code}")


def connect(method, body, content_type):
    """One Connect unary call: (HTTP status, response bytes)."""
    req = urllib.request.Request(
        f"http://{ADDR}/vmprovisioner.v1.VmService/{method}",
        data=body,
        headers={"Content-Type": content_type, "Connect-Protocol-Version": "1"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def connect_json(method, msg, resp_type):
    status, body = connect(method, json_format.MessageToJson(msg).encode(), "application/json")
    assert status == 200, f"{method}: {status} {body!r}"
    # connect-go reads responses with protojson's DiscardUnknown: warden's extras are skipped.
    return json_format.Parse(body, resp_type(), ignore_unknown_fields=True)


def connect_proto(method, msg, resp_type):
    status, body = connect(method, msg.SerializeToString(), "application/proto")
    assert status == 200, f"{method}: {status} {body!r}"
    return resp_type.FromString(body)


def main():
    chan = grpc.insecure_channel(ADDR)
    vms = pb_grpc.VmServiceStub(chan)
    ids = [f"{PREFIX}-{i}" for i in range(3)]
    S = pb.VmState

    # Create: three VMs, one over each protocol.
    r = vms.CreateVm(pb.CreateVmRequest(vm_id=ids[0], config=config(), customer_id="cust-1"))
    assert (r.vm_id, r.state) == (ids[0], S.VM_STATE_CREATED), r
    r = connect_json(
        "CreateVm",
        pb.CreateVmRequest(vm_id=ids[1], config=config(), customer_id="cust-2"),
        pb.CreateVmResponse,
    )
    assert (r.vm_id, r.state) == (ids[1], S.VM_STATE_CREATED), r
    r = connect_proto(
        "CreateVm",
        pb.CreateVmRequest(vm_id=ids[2], config=config(), customer_id="cust-3"),
        pb.CreateVmResponse,
    )
    assert (r.vm_id, r.state) == (ids[2], S.VM_STATE_CREATED), r
    step("created 3 VMs (gRPC, Connect JSON, Connect proto)")

    # Boot two.
    for vm_id in ids[:2]:
        r = vms.BootVm(pb.BootVmRequest(vm_id=vm_id))
        assert r.success and r.state == S.VM_STATE_RUNNING, r
    step("booted 2")

    # Get: the config as sent, the state, metrics, backend details.
    info = vms.GetVmInfo(pb.GetVmInfoRequest(vm_id=ids[0]))
    assert info.vm_id == ids[0] and info.state == S.VM_STATE_RUNNING, info
    assert info.config.cpu.vcpu_count == 1, info.config
    assert info.config.memory.size_bytes == 128 * MIB, info.config
    assert info.config.boot.kernel_path == KERNEL, info.config
    assert info.config.boot.kernel_args == "mode=idle", info.config
    assert dict(info.config.metadata) == {"team": "payments"}, info.config
    assert int(info.backend_info["pid"]) > 0, info.backend_info
    assert info.backend_info["jailer_id"] == ids[0], info.backend_info
    assert info.backend_info["customer_id"] == "cust-1", info.backend_info
    assert info.metrics.memory_usage_bytes > 0, info.metrics
    assert 0.0 <= info.metrics.cpu_usage_percent <= 100.0, info.metrics
    # The same answer through Connect JSON.
    j = connect_json("GetVmInfo", pb.GetVmInfoRequest(vm_id=ids[0]), pb.GetVmInfoResponse)
    assert j.config == info.config and j.state == info.state, j
    step(f"get: pid {info.backend_info['pid']}, memory {info.metrics.memory_usage_bytes} bytes")

    # List: pages of one, a state filter, total_count, customer_id.
    seen, token, pages = [], "", 0
    while True:
        page = vms.ListVms(pb.ListVmsRequest(page_size=1, page_token=token))
        assert page.total_count >= 3, page
        seen += [v for v in page.vms if v.vm_id.startswith(PREFIX)]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        assert pages < 100, "paging does not end"
    assert sorted(v.vm_id for v in seen) == ids, seen
    by_id = {v.vm_id: v for v in seen}
    assert by_id[ids[1]].customer_id == "cust-2", by_id[ids[1]]
    assert by_id[ids[1]].vcpu_count == 1 and by_id[ids[1]].memory_size_bytes == 128 * MIB
    assert dict(by_id[ids[1]].metadata) == {"team": "payments"}
    assert by_id[ids[2]].state == S.VM_STATE_CREATED
    assert by_id[ids[0]].created_timestamp > 1_600_000_000, by_id[ids[0]]
    running = vms.ListVms(pb.ListVmsRequest(state_filter=[S.VM_STATE_RUNNING]))
    assert sorted(v.vm_id for v in running.vms if v.vm_id.startswith(PREFIX)) == ids[:2], running
    assert running.total_count == len(running.vms)
    created = vms.ListVms(pb.ListVmsRequest(state_filter=[S.VM_STATE_CREATED, S.VM_STATE_PAUSED]))
    assert [v.vm_id for v in created.vms if v.vm_id.startswith(PREFIX)] == ids[2:], created
    step(f"list: {pages} pages of 1, filters RUNNING and CREATED|PAUSED")

    # Pause, resume, shutdown, boot again, reboot (graceful and forced).
    assert vms.PauseVm(pb.PauseVmRequest(vm_id=ids[0])).state == S.VM_STATE_PAUSED
    paused = vms.ListVms(pb.ListVmsRequest(state_filter=[S.VM_STATE_PAUSED]))
    assert ids[0] in [v.vm_id for v in paused.vms], paused
    assert vms.ResumeVm(pb.ResumeVmRequest(vm_id=ids[0])).state == S.VM_STATE_RUNNING
    r = vms.ShutdownVm(pb.ShutdownVmRequest(vm_id=ids[0], timeout_seconds=2))
    assert r.success and r.state == S.VM_STATE_SHUTDOWN, r
    assert vms.GetVmInfo(pb.GetVmInfoRequest(vm_id=ids[0])).state == S.VM_STATE_SHUTDOWN
    r = vms.ShutdownVm(pb.ShutdownVmRequest(vm_id=ids[1], force=True))
    assert r.state == S.VM_STATE_SHUTDOWN, r
    assert vms.BootVm(pb.BootVmRequest(vm_id=ids[0])).state == S.VM_STATE_RUNNING
    assert vms.RebootVm(pb.RebootVmRequest(vm_id=ids[0])).state == S.VM_STATE_RUNNING
    assert vms.RebootVm(pb.RebootVmRequest(vm_id=ids[0], force=True)).state == S.VM_STATE_RUNNING
    step("pause, resume, shutdown (graceful, forced), boot, reboot (graceful, forced)")

    # Bad requests and their codes.
    C = grpc.StatusCode
    expect_code(C.NOT_FOUND, vms.GetVmInfo, pb.GetVmInfoRequest(vm_id=f"{PREFIX}-none"))
    expect_code(C.INVALID_ARGUMENT, vms.GetVmInfo, pb.GetVmInfoRequest(), contains="vm_id")
    expect_code(C.ALREADY_EXISTS, vms.CreateVm, pb.CreateVmRequest(vm_id=ids[0], config=config()))
    expect_code(C.INVALID_ARGUMENT, vms.CreateVm, pb.CreateVmRequest(vm_id=f"{PREFIX}-x"),
                contains="config")
    expect_code(C.FAILED_PRECONDITION, vms.PauseVm, pb.PauseVmRequest(vm_id=ids[2]))
    expect_code(C.FAILED_PRECONDITION, vms.ResumeVm, pb.ResumeVmRequest(vm_id=ids[0]))
    expect_code(C.FAILED_PRECONDITION, vms.ShutdownVm, pb.ShutdownVmRequest(vm_id=ids[1]))
    expect_code(C.INVALID_ARGUMENT, vms.ListVms, pb.ListVmsRequest(page_token="garbage"),
                contains="page_token")
    expect_code(C.INVALID_ARGUMENT, vms.ListVms, pb.ListVmsRequest(page_size=-1),
                contains="page_size")
    expect_code(C.INVALID_ARGUMENT, vms.ShutdownVm,
                pb.ShutdownVmRequest(vm_id=ids[0], timeout_seconds=-1), contains="timeout_seconds")
    refused = {
        "config.boot.initrd_path": lambda c: setattr(c.boot, "initrd_path", KERNEL),
        "config.cpu.max_vcpu_count": lambda c: setattr(c.cpu, "max_vcpu_count", 4),
        "config.cpu.topology": lambda c: c.cpu.topology.CopyFrom(
            pb.CpuTopology(sockets=2, cores_per_socket=1, threads_per_core=1)),
        "config.memory.size_bytes": lambda c: setattr(c.memory, "size_bytes", 1000),
        "config.memory.hotplug_enabled": lambda c: setattr(c.memory, "hotplug_enabled", True),
        "config.network[0].ipv6_config": lambda c: c.network.add(
            ipv6_config=pb.IPv6Config(address="fd00::2", prefix_length=64)),
        "config.network[0].mode": lambda c: c.network.add(mode=pb.NETWORK_MODE_DUAL_STACK),
        "config.network[0].ipv4_config.address": lambda c: c.network.add(
            ipv4_config=pb.IPv4Config(address="10.0.0.2")),
        "config.network[0].mac_address": lambda c: c.network.add(mac_address="02:00:00:00:00:01"),
        "config.storage[0].is_root_device": lambda c: [
            c.storage.add(path=KERNEL, is_root_device=True),
            c.storage.add(path=KERNEL, is_root_device=True)],
        "config.console.output": lambda c: setattr(c.console, "output", "/tmp/console.log"),
    }
    for field, change in refused.items():
        c = config()
        change(c)
        want = field if field != "config.storage[0].is_root_device" else "config.storage[1]"
        expect_code(C.INVALID_ARGUMENT, vms.CreateVm,
                    pb.CreateVmRequest(vm_id=f"{PREFIX}-bad", config=c), contains=want)
    # A path outside the asset directories, named as metald spells the field.
    c = config()
    c.storage.add(path="/etc/shadow", read_only=True)
    expect_code(C.INVALID_ARGUMENT, vms.CreateVm,
                pb.CreateVmRequest(vm_id=f"{PREFIX}-bad", config=c), contains="config.storage[0].path")
    # The same refusal through Connect JSON: HTTP 400 with the Connect code.
    status, body = connect("CreateVm", json_format.MessageToJson(
        pb.CreateVmRequest(vm_id=f"{PREFIX}-bad", config=c)).encode(), "application/json")
    err = json.loads(body)
    assert status == 400 and err["code"] == "invalid_argument", (status, err)
    assert "config.storage[0].path" in err["message"], err
    step(f"bad requests: {len(refused) + 11} refusals with their codes")

    # Delete: running (graceful and forced) and stopped.
    assert vms.DeleteVm(pb.DeleteVmRequest(vm_id=ids[0])).success
    assert vms.DeleteVm(pb.DeleteVmRequest(vm_id=ids[1], force=True)).success
    assert connect_proto("DeleteVm", pb.DeleteVmRequest(vm_id=ids[2], force=True),
                         pb.DeleteVmResponse).success
    expect_code(C.NOT_FOUND, vms.DeleteVm, pb.DeleteVmRequest(vm_id=ids[0]))
    left = vms.ListVms(pb.ListVmsRequest())
    assert not [v for v in left.vms if v.vm_id.startswith(PREFIX)], left
    step("deleted 3")
    print("METALD CLIENT OK")


if __name__ == "__main__":
    main()
