# The Cython connection has exactly the API of its pure-Python twin, which carries the types.
from haske._pure.connection import Connection as Connection

__version__: str
CYTHON_VERSION: str
