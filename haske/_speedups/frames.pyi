# The Cython codec has exactly the API of its pure-Python twin, which carries the types.
from haske._pure.frames import MAX_CONTROL_PAYLOAD as MAX_CONTROL_PAYLOAD
from haske._pure.frames import MAX_LENGTH as MAX_LENGTH
from haske._pure.frames import OP_BINARY as OP_BINARY
from haske._pure.frames import OP_CLOSE as OP_CLOSE
from haske._pure.frames import OP_CONTINUATION as OP_CONTINUATION
from haske._pure.frames import OP_PING as OP_PING
from haske._pure.frames import OP_PONG as OP_PONG
from haske._pure.frames import OP_TEXT as OP_TEXT
from haske._pure.frames import OPCODE_NAMES as OPCODE_NAMES
from haske._pure.frames import RSV_BITS as RSV_BITS
from haske._pure.frames import Frame as Frame
from haske._pure.frames import FrameDecoder as FrameDecoder
from haske._pure.frames import apply_mask as apply_mask
from haske._pure.frames import encode_frame as encode_frame
from haske._pure.frames import frame_header as frame_header

__version__: str
CYTHON_VERSION: str
