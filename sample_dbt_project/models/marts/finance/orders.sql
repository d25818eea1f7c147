select
    orders.order_id,
    orders.customer_id,
    orders.order_date,
    orders.status,
    coalesce(payments.amount, 0) as amount,
    coalesce(payments.coupon_amount, 0) as coupon_amount
from {{ ref('stg_orders') }} as orders
left join {{ ref('stg_payment_totals') }} as payments using (order_id)
where {{ fail_if_requested() }}
