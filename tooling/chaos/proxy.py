"""A TCP proxy the harness can cut and restore: the link between edge and cloud."""

import asyncio
import threading


class Proxy:
    delay_s = 0.0  # held back before each chunk goes on, each way: a slow link (a subclass sets it)

    def __init__(self, listen_port, target_port, host="127.0.0.1"):
        self.listen_port, self.target_port, self.host = listen_port, target_port, host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.writers = set()
        self.frozen = frozenset()  # writers of connections that carry nothing more (freeze)
        self.holding = False  # new connections are taken and carry nothing (hold_new)

    def start(self):
        self.thread.start()
        self.restore()
        return self

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def restore(self):
        async def listen():
            self.server = await asyncio.start_server(self._serve, self.host, self.listen_port, reuse_address=True)
        self._call(listen())

    def cut(self):
        """Refuse new connections and drop every open one, as a dead link would."""
        async def close():
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()
        self._call(close())

    def freeze(self):
        """The connections open now carry nothing more either way, and stay open, as over a link the network
        dropped half-open (a laptop asleep, a NAT that forgot it); connections made after this go through."""
        async def freeze():
            self.frozen = frozenset(self.writers)
        self._call(freeze())

    def hold_new(self, holding=True):
        """Connections made from now on (until `hold_new(False)`) are taken and carry nothing either way, for
        good, as by a server that accepts and never answers."""
        self.holding = holding

    def stop(self):
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))
        if self.holding:
            self.frozen |= {writer, up_writer}
        await asyncio.gather(self._forward(reader, up_writer, to_client=False),
                             self._forward(up_reader, writer, to_client=True))
        self.writers.discard(writer)
        self.writers.discard(up_writer)

    async def _forward(self, source, sink, to_client):
        """Copy one direction of a connection as it comes; a subclass may read and rewrite what passes."""
        try:
            while chunk := await source.read(65536):
                if sink in self.frozen:
                    continue
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()
