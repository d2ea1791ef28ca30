"""asyncioserve: an asyncio program (its event loop holds a socketpair, the
self-pipe) with a TCP server and a worker thread that wakes the loop.

Every 10 ms the worker thread hands the loop a callback with
call_soon_threadsafe, which writes a byte into the self-pipe to wake the
loop; the callback ticks "wake N". The loop also connects to its own
server and ticks "echo N" when the answer is right. Both keys advance only
if the self-pipe and the listener work.

Report: {"pid":N,"port":N}
"""

import asyncio
import os
import threading
import time


async def main():
    loop = asyncio.get_running_loop()

    async def handle(reader, writer):
        data = await reader.readline()
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    os.write(1, ('{"pid":%d,"port":%d}\n' % (os.getpid(), port)).encode())

    wakes = [0]

    def wake():
        wakes[0] += 1
        os.write(1, b"tick wake %d\n" % wakes[0])

    def worker():
        while True:
            time.sleep(0.01)
            loop.call_soon_threadsafe(wake)

    threading.Thread(target=worker, daemon=True).start()
    n = 0
    while True:
        await asyncio.sleep(0.01)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"%d\n" % (n + 1))
            answer = await reader.readline()
            writer.close()
        except OSError:
            continue
        if answer == b"echo:%d\n" % (n + 1):
            n += 1
            os.write(1, b"tick echo %d\n" % n)


asyncio.run(main())
