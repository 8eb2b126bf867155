"""bastion.data: loaders for recorded market data and the Parquet catalog.

Every loader returns ``list[schema.Table]`` with exact raw-integer prices and sizes, int64 ns
timestamps and a ``seq`` that preserves the source order, so any format can feed the same
simulator. Modules:

- ``detect``: ``detect_format(path)`` and ``load_any(path, ...)`` for every supported format
- ``catalog``: ``Catalog(root)`` with ``write``, ``read``, ``list`` and ``import_path``
- ``binance_ws``: Binance websocket captures (depth sync procedure, sequence gaps) -> book + trades
- ``freqtrade``: freqtrade feather candles, mark prices, funding events and trades
- ``parquet_samples``: Parquet trade and quote samples
- ``binance_csv``: Binance depth snapshot/update CSV
- ``tardis``: tardis.dev CSV (book snapshots, incremental L2, trades, quotes)
- ``kraken``: Kraken REST OHLC and Trades JSON
- ``bybit``: Bybit orderbook.N JSON lines
- ``hyperliquid``: Hyperliquid websocket captures (l2Book snapshots, trades)
- ``backtesting_csv``: backtesting.py-style OHLCV CSV

Nothing is imported here, so ``import bastion.data.schema`` stays as light as it was.
"""
