# haske._rust has exactly the API of its pure-Python twins, which carry the types.
from haske._pure.handshake import MAX_HEADERS as MAX_HEADERS
from haske._pure.handshake import MAX_REQUEST_HEAD as MAX_REQUEST_HEAD
from haske._pure.handshake import Request as Request
from haske._pure.handshake import Validation as Validation
from haske._pure.handshake import build_rejection as build_rejection
from haske._pure.handshake import build_response as build_response
from haske._pure.handshake import parse_request as parse_request
from haske._pure.handshake import validate_request as validate_request
from haske._pure.handshake import websocket_handshake as websocket_handshake
from haske._pure.manager import BroadcastManager as BroadcastManager
from haske._pure.manager import Outlet as Outlet

__version__: str
BUILD_INFO: dict[str, str]
