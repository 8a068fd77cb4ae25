#ifndef WISP_JSON_NUMBERS_H
#define WISP_JSON_NUMBERS_H

#include <lua.h>
#include <stdbool.h>

/* Turns whole-valued floats in the decoded JSON value at idx (a number or
 * a table, walked recursively) into integers, in place. Allocates nothing. */
void wisp_json_integers(lua_State *L, int idx);

#endif
