with payments as (
    select
        order_id,
        sum(amount) as amount,
        sum(case when payment_method = 'coupon' then amount else 0 end) as coupon_amount
    from {{ ref('stg_payments') }}
    group by order_id
)

select
    orders.order_id,
    orders.customer_id,
    orders.order_date,
    orders.status,
    coalesce(payments.amount, 0) as amount,
    coalesce(payments.coupon_amount, 0) as coupon_amount
from {{ ref('stg_orders') }} as orders
left join payments using (order_id)
where {{ fail_if_requested() }}
