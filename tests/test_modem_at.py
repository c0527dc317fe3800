"""The AT layer over a real pty with pyserial: replies vs URCs, echo, odd bytes, a silent
port, a port that goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import time
import tty
from collections.abc import Callable

import pytest

from failberry.modem.at import AtChannel, open_serial
from failberry.modem.errors import AtTimeout, CmeError, PortGone


class PtyModem:
    """The far end of a pty, answering from a table of canned byte replies."""

    def __init__(self, answers: dict[bytes, bytes | Callable[[], bytes]]) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self.slave = slave
        self.answers = answers
        self.seen: list[bytes] = []
        self.buf = b""
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        self.buf += os.read(self.master, 4096)
        while b"\r" in self.buf:
            cmd, _, self.buf = self.buf.partition(b"\r")
            self.seen.append(cmd)
            answer = self.answers.get(cmd)
            if answer is not None:
                os.write(self.master, answer() if callable(answer) else answer)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


async def channel_for(modem: PtyModem) -> tuple[AtChannel, list[str], list[PortGone]]:
    urcs: list[str] = []
    gone: list[PortGone] = []
    ch = AtChannel(open_serial(modem.path), modem.path, urcs.append, gone.append)
    ch.start()
    return ch, urcs, gone


@pytest.mark.timeout(20)
def test_urcs_never_reach_the_waiting_command() -> None:
    async def go() -> None:
        modem = PtyModem({
            # echo on, a URC before and inside the reply, the read's own +CREG line
            b"AT+CREG?": b"AT+CREG?\r\r\n+CREG: 1\r\n\r\n^MODE: 5,4\r\n"
                         b'+CREG: 2,1,"00C3","0000A13B",2\r\nRING\r\n'
                         b'+CREG: 5,"00C3","0000A13B",2\r\n\r\nOK\r\n',
            b"AT+CSQ": b"\r\n+CSQ: 17,99\r\n\r\n+ZPAS: \"UMTS\",\"CS_PS\"\r\nOK\r\n",
        })
        ch, urcs, _ = await channel_for(modem)
        assert await ch.command("AT+CREG?") == ['+CREG: 2,1,"00C3","0000A13B",2']
        assert await ch.command("AT+CSQ") == ["+CSQ: 17,99"]
        assert urcs == ["+CREG: 1", "^MODE: 5,4", "RING", '+CREG: 5,"00C3","0000A13B",2',
                        '+ZPAS: "UMTS","CS_PS"']
        ch.close()
        modem.unplug()

    asyncio.run(go())


@pytest.mark.timeout(20)
def test_odd_bytes_partial_lines_and_cme() -> None:
    async def go() -> None:
        def dribble() -> bytes:
            # the reply arrives in pieces, with NULs and a byte that is not UTF-8
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, modem.send, b"17,9")
            loop.call_later(0.10, modem.send, b"9\r\n\x00\r\nOK\r\n")
            return b"\x00\xff\r\n+CSQ: "

        modem = PtyModem({b"AT+CSQ": dribble, b"AT+CPIN?": b"\r\n+CME ERROR: 10\r\n",
                          b"AT+COPS?": b"\n\r+COPS: 0\n\rOK\n\r"})
        ch, urcs, _ = await channel_for(modem)
        modem.send(b"\x00\x00\xfe\xfe garbage \x07\r\n")  # noise with nothing in flight
        await asyncio.sleep(0.2)
        assert await ch.command("AT+CSQ") == ["+CSQ: 17,99"]
        with pytest.raises(CmeError) as exc:
            await ch.command("AT+CPIN?")
        assert exc.value.code == 10 and exc.value.meaning == "SIM not inserted"
        assert await ch.command("AT+COPS?") == ["+COPS: 0"]
        assert ch.noise == 2 and urcs == []  # the garbage line and the lone 0xff
        ch.close()
        modem.unplug()

    asyncio.run(go())


@pytest.mark.timeout(20)
def test_silent_port_times_out_and_recovers() -> None:
    async def go() -> None:
        modem = PtyModem({b"AT": b"\r\nOK\r\n"})
        ch, _, _ = await channel_for(modem)
        with pytest.raises(AtTimeout, match="AT\\+CSQ"):
            await ch.command("AT+CSQ", timeout=0.3)
        assert await ch.command("AT", timeout=2) == []  # the channel is still usable
        ch.close()
        modem.unplug()

    asyncio.run(go())


@pytest.mark.timeout(20)
def test_port_that_disappears_fails_fast_without_spinning() -> None:
    async def go() -> None:
        modem = PtyModem({})
        ch, _, gone = await channel_for(modem)
        cpu0, t0 = time.process_time(), time.monotonic()
        waiting = asyncio.ensure_future(ch.command("AT+CSQ", timeout=10))
        await asyncio.sleep(0.1)
        modem.unplug()
        with pytest.raises(PortGone, match="read failed"):
            await waiting
        assert time.monotonic() - t0 < 5  # failed at once, not at the 10 s timeout
        assert len(gone) == 1
        await asyncio.sleep(1.0)  # a hung-up fd left in the loop would spin here
        with pytest.raises(PortGone):
            await ch.command("AT")
        assert time.process_time() - cpu0 < 0.5
        ch.close()

    asyncio.run(go())


def test_opening_a_missing_port_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(PortGone, match="cannot open"):
        open_serial("/dev/does-not-exist-ttyUSB9")


@pytest.mark.timeout(20)
def test_a_command_cancelled_as_its_port_closes_ends_cancelled() -> None:
    # The modem part's stop cancels the poller, then closes the port at once, which fails the
    # waiting command. Python 3.11's asyncio.wait_for then returned that failure (PortGone)
    # and dropped the cancellation: the poller caught PortGone and polled on, for ever, and
    # the part never stopped (the CI failure of test_sim_problems_are_rechecked...).
    async def go() -> None:
        modem = PtyModem({})  # never answers: the command waits
        ch, _, _ = await channel_for(modem)
        task = asyncio.create_task(ch.command("AT+CSQ", 5.0))
        while b"AT+CSQ" not in modem.seen:
            await asyncio.sleep(0.01)
        task.cancel()
        ch.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        modem.unplug()

    asyncio.run(go())


def test_within_keeps_a_cancellation_that_arrives_as_its_event_is_set() -> None:
    # The shape of every "wait for a wake-up or a timeout" loop (alerts, dyndns, inbox,
    # HiLink): asyncio.wait_for returned normally here and the loop went round again.
    from failberry.aio import within

    async def go() -> None:
        wake = asyncio.Event()
        rounds = 0

        async def loop() -> None:
            nonlocal rounds
            while True:
                rounds += 1
                with contextlib.suppress(TimeoutError):
                    await within(wake.wait(), 5.0)
                wake.clear()

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.05)
        wake.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)
        assert rounds == 1

    asyncio.run(go())


def test_within_times_out_in_the_clean_up_of_a_cancelled_task() -> None:
    # A part's stop runs its clean-up (pppd's SIGTERM grace, the data-mode escape) after its
    # task was cancelled: a timeout there is a TimeoutError, as with wait_for (3.11's
    # asyncio.timeout raised CancelledError there and cut the escape short).
    from failberry.aio import within

    async def go() -> None:
        seen: list[str] = []

        async def part() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                try:
                    await within(asyncio.sleep(3600), 0.05)
                except TimeoutError:
                    seen.append("timeout")
                seen.append(str(await within(asyncio.sleep(0, result="done"), 1.0)))

        task = asyncio.create_task(part())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["timeout", "done"]

    asyncio.run(go())
