"""The ptrace loop: run a command under python-ptrace's PtraceDebugger with syscall
tracing, follow its threads, forks and execs, and turn every ioctl on a KVM fd into an
IoctlEvent (x86-64 syscall ABI)."""
from __future__ import annotations

import errno as _errno
import fcntl
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from ptrace import PtraceError  # type: ignore[import-untyped]  # python-ptrace ships no type hints
from ptrace.binding import (  # type: ignore[import-untyped]  # python-ptrace ships no type hints
    PTRACE_EVENT_CLONE,
    PTRACE_EVENT_EXEC,
    PTRACE_EVENT_FORK,
    PTRACE_EVENT_VFORK,
    ptrace_geteventmsg,
)
from ptrace.binding.func import THREAD_TRACE_FLAGS  # type: ignore[import-untyped]  # python-ptrace ships no type hints
from ptrace.debugger import PtraceDebugger, PtraceProcess  # type: ignore[import-untyped]  # python-ptrace ships no type hints
from ptrace.syscall import SYSCALL_NAMES  # type: ignore[import-untyped]  # python-ptrace ships no type hints

from .decode import UnreadableMemory, decode_arg
from .events import IoctlEvent
from .followup import FOLLOW_UPS
from .requests import IOC_READ, IOC_WRITE, KVMIO, ioc_dir, ioc_size, ioc_type, request_name
from .spawn import spawn_traced
from .state import FdTable, KvmFd, KvmObjects

_SYSCALL_STOP = signal.SIGTRAP | 0x80  # PTRACE_O_TRACESYSGOOD
_NEW_TASK_EVENTS = (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE)
_DUP_FCNTLS = (fcntl.F_DUPFD, fcntl.F_DUPFD_CLOEXEC)
_MAX_ERRNO = 4095


@dataclass
class TraceResult:
    """The decoded ioctls in completion order and the command's exit status
    (128 + the signal number if a signal killed it)."""

    events: list[IoctlEvent]
    returncode: int
    timed_out: bool = False


@dataclass
class Call:
    """An ioctl on a KVM fd between syscall entry and exit."""

    fd: int
    target: KvmFd
    request: int
    arg: int
    data: bytes | None  # the argument struct (read at entry if the kernel reads it, at exit if it writes it)
    entry: bytes | None = None  # the struct as passed, when the kernel also writes it


@dataclass
class _Pending:
    nr: int
    args: tuple[int, ...]
    call: Call | None


@dataclass(eq=False)
class Task:
    """One traced thread; the threads of a process share ``fds``."""

    proc: PtraceProcess
    fds: FdTable
    pending: _Pending | None = None  # set between syscall entry and exit
    fresh: bool = False  # made by a fork/clone event: its first SIGSTOP is the attach

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def read(self, addr: int, size: int) -> bytes:
        """*size* bytes of tracee memory; raises UnreadableMemory."""
        try:
            data: bytes = self.proc.readBytes(addr, size)
        except (PtraceError, OSError) as err:
            raise UnreadableMemory(f"{size} bytes at {addr:#x}") from err
        if len(data) != size:
            raise UnreadableMemory(f"{size} bytes at {addr:#x}")
        return data


def trace(argv: Sequence[str], on_event: Callable[[IoctlEvent], None] | None = None,
          env: dict[str, str] | None = None, timeout: float | None = None) -> TraceResult:
    """Run *argv* under the tracer; *on_event* sees each event once its ioctl has returned.

    When *timeout* (seconds) expires every traced task is killed (``timed_out`` is set).
    """
    return Tracer(on_event).run(argv, env, timeout)


class Tracer:
    """One run of one command; see ``trace()``. With ``keep_events=False`` the events only
    go to ``on_event`` (for long runs)."""

    def __init__(self, on_event: Callable[[IoctlEvent], None] | None = None, keep_events: bool = True) -> None:
        self.on_event = on_event
        self.keep_events = keep_events
        self.events: list[IoctlEvent] = []
        self.objects = KvmObjects()
        self._tasks: dict[int, Task] = {}
        self._early: set[int] = set()  # new tasks that stopped before their creator's event
        self._timed_out = False
        self._returncode = 0
        self.main_pid: int | None = None  # the command's pid, once started
        self._debugger = PtraceDebugger()
        self._debugger.traceFork()
        self._debugger.traceClone()
        self._debugger.traceExec()

    def run(self, argv: Sequence[str], env: dict[str, str] | None = None,
            timeout: float | None = None) -> TraceResult:
        pid = spawn_traced(argv, env)
        self.main_pid = pid
        task = Task(self._debugger.addProcess(pid, is_attached=True), FdTable(self.objects))
        task.fds.rescan(pid)
        self._tasks[pid] = task
        timer = threading.Timer(timeout, self._expire) if timeout else None
        with self._interrupts_reach_the_command():
            try:
                if timer:
                    timer.start()
                task.proc.syscall()
                self._loop()
            finally:
                if timer:
                    timer.cancel()
                if self._tasks:  # an exception left tasks: kill and reap them, quietly
                    self.stop()
                    self._loop()
        return TraceResult(self.events, self._returncode, self._timed_out)

    @contextmanager
    def _interrupts_reach_the_command(self) -> Iterator[None]:
        """Ctrl-C goes to the command (it shares the terminal) and the trace runs until the
        command exits; a second Ctrl-C kills it. Only the main thread can take SIGINT."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        interrupts = 0

        def on_interrupt(signum: int, frame: object) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                self.stop()

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _expire(self) -> None:
        self._timed_out = True
        self.stop()

    def stop(self) -> None:
        """Kill the command and every task it made (from any thread, e.g. in ``on_event``)."""
        for pid in list(self._tasks):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ task events
    def _loop(self) -> None:
        while self._tasks:
            try:
                pid, status = os.waitpid(-1, THREAD_TRACE_FLAGS)
            except ChildProcessError:
                return
            task = self._tasks.get(pid)
            if task is None:
                if os.WIFSTOPPED(status):
                    self._early.add(pid)
            elif os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._exited(task, status)
            else:
                with suppress(PtraceError):  # killed meanwhile: its exit status follows
                    task.proc.syscall(self._stopped(task, status))

    def _exited(self, task: Task, status: int) -> None:
        if task.pending is not None and task.pending.call is not None:
            self._publish(self._event(task, task.pending.call, None))
        task.proc.processStatus(status)  # marks it dead and drops it from the debugger
        del self._tasks[task.pid]
        if task.pid == self.main_pid:
            self._returncode = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                                else 128 + os.WTERMSIG(status))

    def _stopped(self, task: Task, status: int) -> int:
        """Handle a stop; returns the signal to deliver when resuming."""
        sig, event = os.WSTOPSIG(status), status >> 16
        if event in _NEW_TASK_EVENTS:
            self._adopt(task, ptrace_geteventmsg(task.pid), event == PTRACE_EVENT_CLONE)
        elif event == PTRACE_EVENT_EXEC:
            self._exec(task, ptrace_geteventmsg(task.pid))
        elif sig == _SYSCALL_STOP:
            self._syscall(task)
        elif task.fresh and sig == signal.SIGSTOP:
            task.fresh = False
        else:
            return sig
        return 0

    def _adopt(self, parent: Task, pid: int, is_thread: bool) -> None:
        """Register a task the kernel attached to us at fork/clone."""
        proc = PtraceProcess(self._debugger, pid, True, parent=parent.proc, is_thread=is_thread)
        self._debugger.dict[pid] = proc
        self._debugger.list.append(proc)
        tgid = _tgid(pid)
        fds = parent.fds if tgid is not None and tgid == _tgid(parent.pid) else parent.fds.copy()
        self._tasks[pid] = Task(proc, fds, fresh=pid not in self._early)
        if pid in self._early:
            self._early.discard(pid)
            proc.syscall()

    def _exec(self, task: Task, former_pid: int) -> None:
        """After exec (a non-leader thread that calls it takes over the leader's pid)."""
        if former_pid != task.pid and former_pid in self._tasks:
            task.pending = self._tasks.pop(former_pid).pending
            self._debugger.deleteProcess(pid=former_pid)
        task.fds = task.fds.copy()
        task.fds.rescan(task.pid)

    # ------------------------------------------------------------ syscalls
    def _syscall(self, task: Task) -> None:
        regs = task.proc.getregs()
        if task.pending is None:
            args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
            task.pending = _Pending(regs.orig_rax, args, self._call(task, regs.orig_rax, args))
            return
        pending, task.pending = task.pending, None
        result = regs.rax - (1 << 64) if regs.rax >> 63 else regs.rax
        if pending.call is not None:
            self._returned(task, pending.call, result)
        elif result >= 0:
            self._track_fds(task, SYSCALL_NAMES.get(pending.nr), pending.args, result)

    def _track_fds(self, task: Task, name: str | None, args: tuple[int, ...], result: int) -> None:
        """Keep the fd table current across open, close, dup, fcntl, close_range and mmap."""
        fds = task.fds
        if name in ("open", "openat", "openat2", "creat"):
            fds.resolve(task.pid, result)
        elif name == "close":
            fds.set(_int32(args[0]), None)
        elif name in ("dup", "dup2", "dup3") or (name == "fcntl" and args[1] in _DUP_FCNTLS):
            fds.set(result, fds.get(_int32(args[0])))
        elif name == "close_range":
            fds.rescan(task.pid)
        elif name == "mmap":
            target = fds.get(_int32(args[4]))
            if target is not None and target.vcpu is not None and args[5] == 0:
                target.vcpu.run_addr = result

    def _call(self, task: Task, nr: int, args: tuple[int, ...]) -> Call | None:
        """At syscall entry: a Call if this is an ioctl on a KVM fd."""
        if SYSCALL_NAMES.get(nr) != "ioctl":
            return None
        fd, request, arg = _int32(args[0]), args[1] & 0xFFFFFFFF, args[2]
        target = task.fds.get(fd)
        if target is None and ioc_type(request) == KVMIO:
            target = task.fds.resolve(task.pid, fd)
        if target is None:
            return None
        size = ioc_size(request)
        data = _try_read(task, arg, size) if ioc_dir(request) & IOC_WRITE and size else None
        return Call(fd, target, request, arg, data)

    def _returned(self, task: Task, call: Call, result: int) -> None:
        if result >= 0 and ioc_dir(call.request) & IOC_READ:
            call.entry, call.data = call.data, _try_read(task, call.arg, ioc_size(call.request))
        event = self._event(task, call, result)
        follow_up = FOLLOW_UPS.get(event.request)
        if result >= 0 and follow_up is not None:
            with suppress(UnreadableMemory):  # the event keeps what was readable
                follow_up(self.objects, task, call, event)
        self._publish(event)

    def _event(self, task: Task, call: Call, result: int | None) -> IoctlEvent:
        """The event; the tables of a call that succeeded are read from the task's memory."""
        name = request_name(call.request)
        err = -result if result is not None and -_MAX_ERRNO <= result < 0 else None
        read = task.read if result is not None and err is None else None
        target = call.target
        return IoctlEvent(
            pid=task.pid, fd=call.fd, kind=target.kind,
            vm=target.vm.serial if target.vm else None,
            vcpu=target.vcpu.id if target.vcpu else None, request=name,
            arg=decode_arg(name, call.request, call.arg, call.data, entry=call.entry, read=read),
            result=-1 if err is not None else result,
            errno=None if err is None else _errno.errorcode.get(err, str(err)))

    def _publish(self, event: IoctlEvent) -> None:
        if self.keep_events:
            self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)


def _try_read(task: Task, addr: int, size: int) -> bytes | None:
    try:
        return task.read(addr, size)
    except UnreadableMemory:
        return None


def _int32(value: int) -> int:
    """A syscall's int argument (fd) from its 64-bit register."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def _tgid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("Tgid:"))
    except (OSError, StopIteration):
        return None
