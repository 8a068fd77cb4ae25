/* Test handler: a shared library that is not a Wisp handler. */
int wisp_not_a_handler(void);
int wisp_not_a_handler(void)
{
    return 0;
}
