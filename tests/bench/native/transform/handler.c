/*
 * The benchmark transform as a native handler, doing what the Lua function
 * (tests/bench/functions/transform) and tests/bench/relay.c do:
 * bench/in {"dev":"d1","temp":23.5,"seq":N,"t0":NS} -> bench/out, the same
 * object plus temp_f (temp in Fahrenheit) and alert (temp above $THRESHOLD),
 * with the QoS of the input. Decoded and encoded with cJSON, like the relay.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <wisp/wisp.h>

static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    static double threshold;
    static int have_threshold;
    if (!have_threshold) {
        const char *t = ctx->env(ctx, "THRESHOLD");
        threshold = t ? strtod(t, NULL) : 30.0;
        have_threshold = 1;
    }
    cJSON *d = cJSON_ParseWithLength(ev->payload, ev->payload_len);
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(d, "temp");
    if (!cJSON_IsNumber(temp)) {
        cJSON_Delete(d);
        ctx->fail(ctx, "expected a JSON object with a number \"temp\"");
        return WISP_ERROR;
    }
    double t = temp->valuedouble;
    int rc = WISP_ERROR;
    char *out = NULL;
    if (cJSON_AddNumberToObject(d, "temp_f", t * 9.0 / 5.0 + 32.0) &&
        cJSON_AddBoolToObject(d, "alert", t > threshold) && (out = cJSON_PrintUnformatted(d)))
        rc = ctx->publish(ctx, "bench/out", out, strlen(out), ev->qos < 0 ? 0 : ev->qos, 0);
    if (rc != WISP_OK)
        ctx->fail(ctx, out ? ctx->error(ctx) : "out of memory");
    cJSON_free(out);
    cJSON_Delete(d);
    return rc;
}

WISP_HANDLER(handle)
