# Timer schedules (runtime/src/schedule.c): "every" periods and 6-field UTC
# cron expressions for the future timer trigger.
wisp_unit_test(test_schedule)
