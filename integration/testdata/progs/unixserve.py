"""unixserve: an asyncio unix-socket echo server on a path, with one client
connection it keeps open to itself and a fresh connection per tick.

Usage: unixserve.py PATH. Every 10 ms the kept connection sends "N" and
reads "echo:N" back (tick "kept N"), and a new connection does the same
(tick "fresh N"). A wrong answer or a failed connection ends the program
with exit 1, so both keys advance only if the listener, its accepted
connection and the kept client work.

Report: {"pid":N}
"""

import asyncio
import os
import sys


async def main(path):
    async def handle(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(b"echo:" + line)
            await writer.drain()
        writer.close()

    await asyncio.start_unix_server(handle, path)
    kr, kw = await asyncio.open_unix_connection(path)
    os.write(1, ('{"pid":%d}\n' % os.getpid()).encode())
    n = 0
    while True:
        await asyncio.sleep(0.01)
        n += 1
        kw.write(b"%d\n" % n)
        if await kr.readline() != b"echo:%d\n" % n:
            sys.exit("kept connection: wrong answer at %d" % n)
        os.write(1, b"tick kept %d\n" % n)
        r, w = await asyncio.open_unix_connection(path)
        w.write(b"%d\n" % n)
        if await r.readline() != b"echo:%d\n" % n:
            sys.exit("fresh connection: wrong answer at %d" % n)
        w.close()
        await w.wait_closed()
        os.write(1, b"tick fresh %d\n" % n)


asyncio.run(main(sys.argv[1]))
