"""Opcode bytes (`pickle.MARK[0]`, ...), which of them push a value, and their names for error messages."""

import pickle

MARK = pickle.MARK[0]
STOP = pickle.STOP[0]
POP = pickle.POP[0]
POP_MARK = pickle.POP_MARK[0]
DUP = pickle.DUP[0]
FLOAT = pickle.FLOAT[0]
INT = pickle.INT[0]
BININT = pickle.BININT[0]
BININT1 = pickle.BININT1[0]
LONG = pickle.LONG[0]
BININT2 = pickle.BININT2[0]
NONE = pickle.NONE[0]
PERSID = pickle.PERSID[0]
BINPERSID = pickle.BINPERSID[0]
REDUCE = pickle.REDUCE[0]
STRING = pickle.STRING[0]
BINSTRING = pickle.BINSTRING[0]
SHORT_BINSTRING = pickle.SHORT_BINSTRING[0]
UNICODE = pickle.UNICODE[0]
BINUNICODE = pickle.BINUNICODE[0]
APPEND = pickle.APPEND[0]
BUILD = pickle.BUILD[0]
GLOBAL = pickle.GLOBAL[0]
DICT = pickle.DICT[0]
EMPTY_DICT = pickle.EMPTY_DICT[0]
APPENDS = pickle.APPENDS[0]
GET = pickle.GET[0]
BINGET = pickle.BINGET[0]
INST = pickle.INST[0]
LONG_BINGET = pickle.LONG_BINGET[0]
LIST = pickle.LIST[0]
EMPTY_LIST = pickle.EMPTY_LIST[0]
OBJ = pickle.OBJ[0]
PUT = pickle.PUT[0]
BINPUT = pickle.BINPUT[0]
LONG_BINPUT = pickle.LONG_BINPUT[0]
SETITEM = pickle.SETITEM[0]
TUPLE = pickle.TUPLE[0]
EMPTY_TUPLE = pickle.EMPTY_TUPLE[0]
SETITEMS = pickle.SETITEMS[0]
BINFLOAT = pickle.BINFLOAT[0]
PROTO = pickle.PROTO[0]
NEWOBJ = pickle.NEWOBJ[0]
EXT1 = pickle.EXT1[0]
EXT2 = pickle.EXT2[0]
EXT4 = pickle.EXT4[0]
TUPLE1 = pickle.TUPLE1[0]
TUPLE2 = pickle.TUPLE2[0]
TUPLE3 = pickle.TUPLE3[0]
NEWTRUE = pickle.NEWTRUE[0]
NEWFALSE = pickle.NEWFALSE[0]
LONG1 = pickle.LONG1[0]
LONG4 = pickle.LONG4[0]
BINBYTES = pickle.BINBYTES[0]
SHORT_BINBYTES = pickle.SHORT_BINBYTES[0]
SHORT_BINUNICODE = pickle.SHORT_BINUNICODE[0]
BINUNICODE8 = pickle.BINUNICODE8[0]
BINBYTES8 = pickle.BINBYTES8[0]
EMPTY_SET = pickle.EMPTY_SET[0]
ADDITEMS = pickle.ADDITEMS[0]
FROZENSET = pickle.FROZENSET[0]
NEWOBJ_EX = pickle.NEWOBJ_EX[0]
STACK_GLOBAL = pickle.STACK_GLOBAL[0]
MEMOIZE = pickle.MEMOIZE[0]
FRAME = pickle.FRAME[0]
BYTEARRAY8 = pickle.BYTEARRAY8[0]
NEXT_BUFFER = pickle.NEXT_BUFFER[0]
READONLY_BUFFER = pickle.READONLY_BUFFER[0]

# Opcodes that push one value (memo gets and DUP included: each costs a reference); MARK pushes a mark, not a value.
PUSHES = bytearray(256)
for _code in (
    FLOAT, INT, BININT, BININT1, LONG, BININT2, NONE, STRING, BINSTRING, SHORT_BINSTRING, UNICODE, BINUNICODE, GLOBAL,
    EMPTY_DICT, GET, BINGET, INST, LONG_BINGET, LIST, EMPTY_LIST, OBJ, DICT, TUPLE, EMPTY_TUPLE, BINFLOAT, NEWOBJ,
    TUPLE1, TUPLE2, TUPLE3, NEWTRUE, NEWFALSE, LONG1, LONG4, BINBYTES, SHORT_BINBYTES, SHORT_BINUNICODE, BINUNICODE8,
    BINBYTES8, EMPTY_SET, FROZENSET, NEWOBJ_EX, STACK_GLOBAL, BYTEARRAY8, DUP, REDUCE,
):
    PUSHES[_code] = 1
del _code

NAMES = {}
for _name in dir(pickle):
    _value = getattr(pickle, _name)
    # TRUE / FALSE are INT with an argument, not opcodes of their own.
    if _name.isupper() and isinstance(_value, bytes) and len(_value) == 1 and _name not in ("TRUE", "FALSE"):
        NAMES.setdefault(_value[0], _name)
del _name, _value
