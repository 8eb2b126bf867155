"""Column and field indices shared by the compiled matching loop and its Python owner.

The simulator's state lives in a handful of NumPy arrays rather than objects, so the compiled
loop can run over it without boxing and Python can read it without copies. These constants are
the one place that says what each row and column means.
"""

from __future__ import annotations

import numpy as np

# --- event chunk: int64 rows of EVI[.., n] and uint8 rows of EVK[.., n] ------------------------
EV_TS_EVENT = 0  # venue time, ns
EV_TS_LOCAL = 1  # time the strategy can see the event, ns
EV_PRICE_IDX = 2  # price as an index into the dense book (-1: outside the book's range)
EV_SIZE = 3  # raw size (0 deletes a level)
EVI_ROWS = 4

EK_KIND = 0
EK_FLAGS = 1
EVK_ROWS = 2

KIND_BID = 1
KIND_ASK = 2
KIND_TRADE_BUY = 3  # buyer was the aggressor
KIND_TRADE_SELL = 4
KIND_TRADE_UNKNOWN = 5
KIND_FUNDING = 6  # EV_SIZE holds the rate, raw × 1e-12

FLAG_SNAPSHOT = 1
FLAG_CLEAR = 2
FLAG_LAST = 4

# --- order slots: ORD[slot, field] ----------------------------------------------------------------
O_STATE = 0
O_SIDE = 1  # +1 buy, -1 sell
O_PRICE_IDX = 2  # book index of the limit price (market: 0)
O_QTY = 3
O_FILLED = 4
O_QUEUE = 5  # quantity ahead of us at our level
O_TIF = 6  # TimeInForce value
O_TYPE = 7  # OrderType value
O_ARRIVE = 8  # when the new-order request reaches the venue
O_CANCEL = 9  # when a cancel request reaches the venue (NO_TIME: none)
O_OID = 10  # engine-side numeric id
O_WAS_MARKETABLE = 11  # took liquidity on arrival: later fills come only from trades
O_FIELDS = 12

ST_FREE = 0
ST_PENDING_NEW = 1
ST_RESTING = 2

# --- notifications (venue → strategy), a ring of NOTE[row, field] ---------------------------------
N_KIND = 0
N_OID = 1
N_TS = 2  # venue time of the fact
N_PRICE_IDX = 3
N_QTY = 4
N_DELIVER = 5  # when the strategy learns of it
N_FIELDS = 6

NOTE_ACCEPTED = 1
NOTE_REJECTED = 2
NOTE_FILL_MAKER = 3
NOTE_FILL_TAKER = 4
NOTE_CANCELED = 5
NOTE_EXPIRED = 6
NOTE_CANCEL_REJECTED = 7

REJECT_POST_ONLY = 1  # N_QTY carries the reject reason code for NOTE_REJECTED
REJECT_NO_BOOK = 2
REJECT_OUT_OF_RANGE = 3

# --- scalars S[...] ----------------------------------------------------------------------------
S_IDX = 0  # next event in the chunk
S_N = 1  # valid events in the chunk
S_NTICKS = 2
S_BEST_BID = 3  # index, -1 when empty
S_BEST_ASK = 4  # index, NTICKS when empty
S_NOTE_HEAD = 5  # next note to deliver (monotonic counter)
S_NOTE_TAIL = 6  # next note to write (monotonic counter)
S_ORDER_LAT = 7
S_RESP_LAT = 8
S_FEED_LAT = 9  # constant feed latency, used when S_LAT_FROM_DATA == 0
S_LAT_FROM_DATA = 10
S_SUBS = 11
S_TIMER = 12  # next timer (local time), NO_TIME when none
S_NOW = 13  # the strategy's clock at the last return
S_SEEN_BID = 14
S_SEEN_ASK = 15
S_PARTIAL = 16  # 1: partial fills allowed
S_N_ACT = 17  # active order slots listed in ACT
S_NEXT_ARRIVAL = 18  # earliest pending request arrival, NO_TIME when none
S_TRADE_IDX = 19  # chunk index of the trade that caused a TRADE return
S_CROSSED = 20  # messages after which the book was crossed
S_EVENTS = 21  # events applied in total
S_LAST_TS_EVENT = 22
S_FUNDING_IDX = 23
# slot 24: unused
S_TS_SHIFT = 25  # added to every timestamp of the current chunk (tiled replays)
S_LOCAL_SHIFT = 26  # added to recorded local times (feed latency from data, never negative)
S_MY_BID_LO = 27  # book index range of our resting buy orders (empty: LO > HI), a cheap filter
S_MY_BID_HI = 28  # that spares the depth loop a scan of our orders on every row
S_MY_ASK_LO = 29
S_MY_ASK_HI = 30
S_FIELDS = 32

SUB_TOP_OF_BOOK = 1  # called when the best bid or ask price changes (at message end)
SUB_TRADES = 2
SUB_BOOK_MESSAGES = 4  # called at the end of every book message
SUB_FUNDING = 8

R_END = 0
R_BOOK = 1
R_TRADE = 2
R_ORDER = 4
R_TIMER = 8
R_FUNDING = 16
R_CHUNK_DONE = 32

NO_TIME = np.iinfo(np.int64).max
